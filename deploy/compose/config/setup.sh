#!/bin/sh
# First set-up of the compose federation (compose.yaml's `setup` service): the operator's steps of
# docs/operations.md, as commands. Runs once; a second run finds $STATE/central/.setup-done and stops.
# The development PKI signs the CSRs of both security servers; a real deployment uses a real CA (docs/pki.md).
set -eu

STATE=${STATE:-/var/lib/gateway}
CONF=${CONF:-/etc/gateway}
OCSP_URL=${OCSP_URL:-http://pki:8888}
TSA_URL=${TSA_URL:-http://pki:8889}
ADAPTERS_URL=${ADAPTERS_URL:-http://adapters:8000}
SS1_ADDRESS=${SS1_ADDRESS:-ss1:5500}  # each server's mutual-TLS address as the peers reach it
SS2_ADDRESS=${SS2_ADDRESS:-ss2:5500}
: "${SS1_DATABASE_URL:?}" "${SS2_DATABASE_URL:?}" "${GATEWAY_CENTRAL__DATABASE_URL:?}"

if [ -e "$STATE/central/.setup-done" ]; then
  echo "the federation is set up already ($STATE/central/.setup-done)"
  exit 0
fi
C="-c $CONF/central.toml"

# (1) the development PKI: CA, OCSP responder and TSA certificates
[ -e "$STATE/pki/ca.pem" ] || gateway pki init --dir "$STATE/pki" --name "DEV Development CA" --ocsp-url "$OCSP_URL"

# (2) the central server: its database and signing key, the trusted CA and TSA, the two agencies
gateway $C central init
gateway $C central ca add --name "DEV Development CA" --cert "$STATE/pki/ca.pem" --ocsp-url "$OCSP_URL"
gateway $C central tsa add --name "DEV Development TSA" --url "$TSA_URL" --cert "$STATE/pki/tsa.pem"
gateway $C central member add DEV/GOV/1001 --name "Agency A"
gateway $C central subsystem add DEV/GOV/1001/consumer
gateway $C central member add DEV/GOV/1002 --name "Agency B"
gateway $C central subsystem add DEV/GOV/1002/registry

# (3) each security server: keys and CSRs, certificates from the CA, registration at the central server
for n in 1 2; do
  S="-c $CONF/ss$n.toml"
  dir="$STATE/ss$n"
  gateway $S server init --name "Agency $n"
  gateway pki issue --dir "$STATE/pki" --kind auth --csr "$dir/auth.csr" --identity "DEV/GOV/100$n/ss$n" \
    --out "$dir/auth-issued.pem"
  gateway pki issue --dir "$STATE/pki" --kind sign --csr "$dir/sign.csr" --identity "DEV/GOV/100$n" \
    --out "$dir/sign-issued.pem"
  gateway $S server import-cert "$dir/auth-issued.pem"
  gateway $S server import-cert "$dir/sign-issued.pem"
  eval "address=\$SS${n}_ADDRESS"
  gateway $C central server add "DEV/GOV/100$n/ss$n" --address "$address"
  gateway $C central server add-cert "DEV/GOV/100$n/ss$n" --cert "$dir/auth.pem"
  gateway $C central anchor --out "$dir/anchor.json"
done
gateway $C central server add-client DEV/GOV/1001/ss1 DEV/GOV/1001/consumer
gateway $C central server add-client DEV/GOV/1002/ss2 DEV/GOV/1002/registry
gateway $C central publish

# (4) the registries behind Agency B's services
gateway adapter demo-data --out "$STATE/registries"

# (5) each server's own configuration: hosted clients, services, access rights (default deny)
GATEWAY_SERVER__DATABASE_URL=$SS1_DATABASE_URL gateway -c "$CONF/ss1.toml" serverconf client add \
  DEV/GOV/1001/consumer --auth none
export GATEWAY_SERVER__DATABASE_URL="$SS2_DATABASE_URL"
S2="-c $CONF/ss2.toml"
gateway $S2 serverconf client add DEV/GOV/1002/registry
for service in persons companies; do
  gateway $S2 serverconf service add "DEV/GOV/1002/registry/$service" --url "$ADAPTERS_URL/$service" \
    --openapi "$ADAPTERS_URL/$service/openapi.json"
  gateway $S2 serverconf access grant "DEV/GOV/1002/registry/$service" DEV/GOV/1001/consumer
done

touch "$STATE/central/.setup-done"
echo "the federation is set up"
