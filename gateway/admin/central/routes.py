"""The central server's admin API route table (pure): every route's method, path, roles and schemas.

Built per instance (:func:`central_api`), because identifiers of another instance are refused and the schemas
say so. The routes shared with the security server (session, users, API keys, session keys, audit log, the
document itself) come from :func:`gateway.admin.routes.account_routes` with the central server's roles.

Identifiers in paths use X-Road's ``:``-joined form (``DEV:GOV:1001``), in bodies the ``/``-joined form.
"""

from __future__ import annotations

import functools

from gateway.admin.formats import HEX64, code, identifier
from gateway.admin.roles import CENTRAL_ROLE_DESCRIPTIONS, Role
from gateway.admin.routes import (
    _PORT,
    API,
    HTTP_URL,
    MAX_LOG_INDEX,
    OPT_TIME,
    PATH_PARAMS,
    TIME,
    ApiSpec,
    Param,
    PathParams,
    Route,
    account_routes,
    obj,
    string,
)
from gateway.admin.schema import JsonSchema, page_schema
from gateway.globalconf.model import MAX_WITNESSES


def _transparency(instance: str) -> JsonSchema:
    return obj({
        "purposes": {"type": "object", "maxProperties": 1000,
                     "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
                     "additionalProperties": {"type": "string", "maxLength": 500},
                     "description": "purpose code -> text"},
        "portal": {"anyOf": [identifier("subsystem", instance=instance), {"type": "null"}],
                   "description": "the citizen portal's subsystem"},
        "embargo_clients": {"type": "array", "maxItems": 1000, "items": identifier("subsystem", instance=instance)},
    }, ("purposes", "portal", "embargo_clients"))


SYSADMIN: frozenset[Role] = frozenset({"system-administrator"})
REGISTRATION: frozenset[Role] = frozenset({"registration-officer"})
SECURITY: frozenset[Role] = frozenset({"security-officer"})
# who may read the registry, the trust services and the keys: everyone but the auditor
READERS: frozenset[Role] = frozenset(CENTRAL_ROLE_DESCRIPTIONS) - {"auditor"}
# who may read registration requests, published versions and witness policies: everyone
EVERYONE: frozenset[Role] = frozenset(CENTRAL_ROLE_DESCRIPTIONS)
# who may set and remove witness policies (docs/witness.md section 3): a trust decision, like CAs and TSAs
WITNESS_ADMINS: frozenset[Role] = SYSADMIN | SECURITY

MAX_NAME_LENGTH = 1024  # characters; as gateway.central.registry (member names, group descriptions)
MAX_AUTHORITY_NAME_LENGTH = 255  # characters; CA and TSA names
MAX_COMMENT_LENGTH = 4096  # characters; as gateway.central.registration
_CONTROL = "\\x00-\\x1f\\x7f"


def _text(description: str, max_length: int) -> JsonSchema:
    """Free text as :func:`gateway.central.registry.check_text` wants it: not blank, no control characters."""
    return {"type": "string", "maxLength": max_length, "pattern": f"^[^{_CONTROL}]*[^{_CONTROL}\\s][^{_CONTROL}]*$",
            "description": description, "x-rule": f"1-{max_length} characters, not blank, no control characters"}


PEM = string("certificate, PEM (or base64 DER)", max_length=64 * 1024, min_length=1)
ADDRESS: JsonSchema = {
    # at most 255 in all keeps the host within RFC 1123's 253 characters whatever the port (the registry's rule)
    "type": "string", "maxLength": 255,
    "pattern": "^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
               "|\\[[0-9A-Fa-f:.]+\\]):(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]"
               "|6553[0-5])$",
    "description": "HOST:PORT of the server-to-server (mTLS) port; IPv6 hosts in brackets",
    "x-rule": "HOST:PORT with a host name, IPv4 address or [IPv6] address and a port 1-65535, at most 255 "
              "characters",
}
_URL_CHAR, _URL_END = '[!-"$->@-~]', '[!-"$-.0->@-~]'  # printable, no space, '#' or '?'; the end no '/' either
WITNESS_URL: JsonSchema = {
    "type": "string", "maxLength": 2048,
    "pattern": f"^https://[A-Za-z0-9._~-]+(?::{_PORT})?(?:/{_URL_CHAR}*{_URL_END})?$",
    "description": "the witness's prefix: POST <url>/add-checkpoint; by default https://<the server's registered "
                   "address>/witness",
    "x-rule": "an https:// URL with a host, without credentials, query, fragment, white space or a final '/'",
}
VKEY: JsonSchema = {
    "type": "string", "maxLength": 512,
    "pattern": "^[^\\s+\\x00-\\x1f\\x7f]{1,255}\\+[0-9a-f]{8}\\+[A-Za-z0-9+/]{44}$",
    "description": "the witness's C2SP vkey: <name>+<hex key ID>+<base64(0x04 || Ed25519 public key)>, as "
                   "`gateway token witness-key` prints it on the witness's server",
    "x-rule": "<name>+<8 hex digits>+<44 base64 characters>, the name without spaces or '+'",
}
COMMENT: JsonSchema = {"type": "string", "maxLength": MAX_COMMENT_LENGTH, "description": "the officer's comment"}
LIST = {"type": "array", "items": {"type": "string"}}


def _schemas(instance: str) -> dict[str, JsonSchema]:
    ident: dict[str, JsonSchema] = {"id": {"type": "string", "description": "'/'-joined"},
                                    "encoded_id": {"type": "string", "description": "':'-joined, as in paths"}}
    member = {**ident, "name": {"type": "string"}, "subsystems": {**LIST, "description": "subsystem codes"}}
    server = {**ident, "address": {"type": "string"},
              "auth_certs": {**LIST, "description": "hex SHA-256 of each authentication certificate"},
              "clients": {**LIST, "description": "members and subsystems it serves"}}
    group = {**ident, "description": {"type": "string"}, "members": LIST}
    signature = obj({
        "verified": {"type": "boolean", "description": "always true: a request is stored only once its signature, "
                     "its signer certificate (from a trusted CA, valid, naming the server) and its fields "
                     "have been verified"},
        "verified_at": TIME,
        "signer": {"type": "string", "description": "which certificate signed it"},
        "signer_cert_sha256": {"type": ["string", "null"], "description": "hex SHA-256 of the signer "
                               "certificate when the request carries it (auth_cert_reg)"},
    }, ("verified", "verified_at", "signer", "signer_cert_sha256"))
    request: dict[str, JsonSchema] = {
        "id": {"type": "integer"}, "type": {"type": "string", "enum": ["auth_cert_reg", "auth_cert_deletion",
                                                                       "client_reg", "client_deletion"]},
        "state": {"type": "string", "enum": ["submitted", "approved", "rejected", "revoked"]},
        "server": {"type": "string"}, "address": {"type": ["string", "null"]}, "client": {"type": ["string", "null"]},
        "auth_cert_sha256": {"type": ["string", "null"]}, "origin": {"type": ["string", "null"]},
        "comment": {"type": ["string", "null"]}, "created_at": TIME, "decided_at": OPT_TIME,
        "decided_by": {"type": ["string", "null"]}, "signature": signature,
    }
    return {
        "member": obj(member, tuple(member)),
        "server": obj(server, tuple(server)),
        "group": obj(group, tuple(group)),
        "ca": obj({"name": {"type": "string"}, "certificate_pem": {"type": "string"},
                          "ocsp_urls": LIST, "sha256": {"type": "string"}, "subject": {"type": "string"},
                          "not_after": TIME},
                         ("name", "certificate_pem", "ocsp_urls", "sha256", "subject", "not_after")),
        "tsa": obj({"name": {"type": "string"}, "url": {"type": "string"}, "certificate_pem": {"type": "string"},
                           "sha256": {"type": "string"}},
                          ("name", "url", "certificate_pem", "sha256")),
        "signing_key": obj({"keyid": {"type": "string"}, "number": {"type": "integer"},
                                   "state": {"type": "string", "enum": ["inactive", "active", "retired"]},
                                   "created_at": TIME, "retired_at": OPT_TIME, "certificate_pem": {"type": "string"}},
                                  ("keyid", "number", "state", "created_at", "retired_at", "certificate_pem")),
        "request": obj(request, tuple(request)),
        "version": obj({"version": {"type": "integer"}, "issued_at": TIME, "expires_at": TIME,
                               "sha256": {"type": "string", "description": "of the signed document as served (ETag)"},
                               "content_sha256": {"type": "string", "description": "of what it says, without "
                                                  "version and times"}},
                              ("version", "issued_at", "expires_at", "sha256", "content_sha256")),
        "fingerprint": obj({"fingerprint": {"type": "string"}}, ("fingerprint",)),
        "witness_policy": obj({
            **ident, "quorum": {"type": "integer", "description": "how many of the witnesses must cosign"},
            "witnesses": {"type": "array", "description": "sorted by name", "items": obj({
                "name": {"type": "string", "description": "the key name"},
                "key_id": {"type": "string", "description": "hex, 4 bytes"},
                "vkey": {"type": "string"}, "url": {"type": "string"},
                "server": {"type": "string", "description": "the security server that runs it, '/'-joined"},
            }, ("name", "key_id", "vkey", "url", "server"))},
        }, (*ident, "quorum", "witnesses")),
        "set_witness_policy": obj({
            "quorum": {"type": "integer", "minimum": 1, "maximum": MAX_WITNESSES,
                       "description": "how many of the witnesses must cosign; at most as many as are listed"},
            "witnesses": {"type": "array", "minItems": 1, "maxItems": MAX_WITNESSES, "items": obj({
                "vkey": VKEY, "url": WITNESS_URL,
                "server": identifier("server", "the security server that runs the witness (of another member), "
                                     "'/'-joined", instance=instance),
            }, ("vkey", "server"))},
        }, ("quorum", "witnesses")),
        "decision": obj({"comment": COMMENT}),
        # requests
        "add_member": obj({"id": identifier("member", instance=instance),
                                  "name": _text("the member's name", MAX_NAME_LENGTH)}, ("id", "name")),
        "add_server": obj({"id": identifier("server", instance=instance), "address": ADDRESS},
                                 ("id", "address")),
        "add_group": obj({"id": identifier("group", instance=instance),
                                 "description": _text("what the group is for", MAX_NAME_LENGTH)},
                                ("id", "description")),
        "client": obj({"client": identifier("client", instance=instance)}, ("client",)),
        "add_ca": obj({"name": _text("the CA's name", MAX_AUTHORITY_NAME_LENGTH), "pem": PEM,
                              "ocsp_urls": {"type": "array", "items": HTTP_URL, "maxItems": 16, "uniqueItems": True,
                                            "description": "OCSP responder URLs, in order of preference"}},
                             ("name", "pem")),
        "add_tsa": obj({"name": _text("the TSA's name", MAX_AUTHORITY_NAME_LENGTH), "url": HTTP_URL,
                               "pem": PEM}, ("name", "url", "pem")),
    }


def _path_params(instance: str) -> PathParams:
    return {
        "username": PATH_PARAMS["username"], "key_id": PATH_PARAMS["key_id"],
        "member_id": ("member, ':'-joined, e.g. DEV:GOV:1001", identifier("member", in_path=True, instance=instance)),
        "server_id": ("security server, ':'-joined, e.g. DEV:GOV:1001:ss1",
                      identifier("server", in_path=True, instance=instance)),
        "group_id": ("global group, ':'-joined, e.g. DEV:security-server-owners",
                     identifier("group", in_path=True, instance=instance)),
        "client_id": ("member or subsystem, ':'-joined", identifier("client", in_path=True, instance=instance)),
        "subsystem_code": ("subsystem code", code("subsystem code")),
        "fingerprint": ("hex SHA-256 of the certificate", HEX64),
        "name": ("name of a CA or TSA", {"type": "string", "minLength": 1, "maxLength": MAX_AUTHORITY_NAME_LENGTH}),
        "keyid": ("keyid of a configuration-signing key, or a unique prefix of at least 8 hex digits",
                  {"type": "string", "pattern": "^[0-9a-fA-F]{8,64}$", "x-rule": "8-64 hex digits"}),
        "request_id": ("number of a registration request", {"type": "integer", "minimum": 1,
                                                             "maximum": MAX_LOG_INDEX}),
    }


def _routes(instance: str) -> tuple[Route, ...]:
    s = _schemas(instance)
    members, servers, groups = f"{API}/members", f"{API}/servers", f"{API}/global-groups"
    requests = f"{API}/registration-requests"
    return (
        *account_routes(CENTRAL_ROLE_DESCRIPTIONS, openapi_summary="This OpenAPI 3.1 document",
                        audit_readers=SYSADMIN | {"auditor"}),
        # --- members and subsystems
        Route(operation_id="listMembers", method="GET", path=members, roles=READERS, tag="members",
              summary="Members of the federation with their subsystems", response=page_schema(s["member"]),
              paginated=True),
        Route(operation_id="addMember", method="POST", path=members, roles=REGISTRATION, tag="members",
              summary="Register a member", request=s["add_member"], response=s["member"], status=201,
              errors=(400, 409)),
        Route(operation_id="getMember", method="GET", path=f"{members}/{{member_id}}", roles=READERS, tag="members",
              summary="One member", response=s["member"], errors=(400, 404)),
        Route(operation_id="renameMember", method="PATCH", path=f"{members}/{{member_id}}", roles=REGISTRATION,
              tag="members", summary="Change a member's name",
              request=obj({"name": _text("the member's name", MAX_NAME_LENGTH)}, ("name",)),
              response=s["member"], errors=(400, 404)),
        Route(operation_id="removeMember", method="DELETE", path=f"{members}/{{member_id}}", roles=REGISTRATION,
              tag="members", summary="Remove a member with its subsystems, servers, client and group entries "
              "(refused while one of its servers runs a witness a witness policy names)",
              status=204, errors=(400, 404, 409)),
        Route(operation_id="addSubsystem", method="POST", path=f"{members}/{{member_id}}/subsystems",
              roles=REGISTRATION, tag="members", summary="Register a subsystem of a member",
              request=obj({"code": code("subsystem code")}, ("code",)), response=s["member"], status=201,
              errors=(400, 404, 409)),
        Route(operation_id="removeSubsystem", method="DELETE",
              path=f"{members}/{{member_id}}/subsystems/{{subsystem_code}}", roles=REGISTRATION, tag="members",
              summary="Remove a subsystem and every client and group entry naming it", status=204,
              errors=(400, 404)),
        # --- security servers
        Route(operation_id="listServers", method="GET", path=servers, roles=READERS, tag="servers",
              summary="Security servers with their authentication certificates and clients",
              response=page_schema(s["server"]), paginated=True),
        Route(operation_id="addServer", method="POST", path=servers, roles=REGISTRATION, tag="servers",
              summary="Register a security server of a member", request=s["add_server"], response=s["server"],
              status=201, errors=(400, 404, 409)),
        Route(operation_id="getServer", method="GET", path=f"{servers}/{{server_id}}", roles=READERS, tag="servers",
              summary="One security server", response=s["server"], errors=(400, 404)),
        Route(operation_id="setServerAddress", method="PATCH", path=f"{servers}/{{server_id}}", roles=REGISTRATION,
              tag="servers", summary="Change a security server's address",
              request=obj({"address": ADDRESS}, ("address",)), response=s["server"], errors=(400, 404)),
        Route(operation_id="removeServer", method="DELETE", path=f"{servers}/{{server_id}}", roles=REGISTRATION,
              tag="servers", summary="Remove a security server with its certificates, clients and witness policy "
              "(refused while it runs a witness a witness policy names)", status=204, errors=(400, 404, 409)),
        Route(operation_id="addAuthCert", method="POST", path=f"{servers}/{{server_id}}/auth-certs",
              roles=REGISTRATION, tag="servers", summary="Register an authentication certificate for a server",
              request=obj({"pem": PEM}, ("pem",)), response=s["fingerprint"], status=201,
              errors=(400, 404, 409)),
        Route(operation_id="removeAuthCert", method="DELETE",
              path=f"{servers}/{{server_id}}/auth-certs/{{fingerprint}}", roles=REGISTRATION, tag="servers",
              summary="Remove an authentication certificate from a server", status=204, errors=(400, 404)),
        Route(operation_id="addServerClient", method="POST", path=f"{servers}/{{server_id}}/clients",
              roles=REGISTRATION, tag="servers", summary="Register a member or subsystem as a server's client",
              request=s["client"], response=s["server"], status=201, errors=(400, 404, 409)),
        Route(operation_id="removeServerClient", method="DELETE",
              path=f"{servers}/{{server_id}}/clients/{{client_id}}", roles=REGISTRATION, tag="servers",
              summary="Remove a client from a server", status=204, errors=(400, 404)),
        # --- global groups
        Route(operation_id="listGlobalGroups", method="GET", path=groups, roles=READERS, tag="global-groups",
              summary="Global groups and their members", response=page_schema(s["group"]), paginated=True),
        Route(operation_id="addGlobalGroup", method="POST", path=groups, roles=REGISTRATION, tag="global-groups",
              summary="Register a global group", request=s["add_group"], response=s["group"], status=201,
              errors=(400, 409)),
        Route(operation_id="removeGlobalGroup", method="DELETE", path=f"{groups}/{{group_id}}", roles=REGISTRATION,
              tag="global-groups", summary="Remove a global group", status=204, errors=(400, 404)),
        Route(operation_id="addGlobalGroupMember", method="POST", path=f"{groups}/{{group_id}}/members",
              roles=REGISTRATION, tag="global-groups", summary="Add a member or subsystem to a global group",
              request=s["client"], response=s["group"], status=201, errors=(400, 404, 409)),
        Route(operation_id="removeGlobalGroupMember", method="DELETE",
              path=f"{groups}/{{group_id}}/members/{{client_id}}", roles=REGISTRATION, tag="global-groups",
              summary="Remove a member or subsystem from a global group", status=204, errors=(400, 404)),
        # --- trust services
        Route(operation_id="listCas", method="GET", path=f"{API}/cas", roles=READERS, tag="trust-services",
              summary="Trusted certification authorities with their OCSP responders",
              response=page_schema(s["ca"]), paginated=True),
        Route(operation_id="addCa", method="POST", path=f"{API}/cas", roles=SECURITY, tag="trust-services",
              summary="Trust a certification authority (its CA certificate) with its OCSP responders",
              request=s["add_ca"], response=s["ca"], status=201, errors=(400, 409)),
        Route(operation_id="removeCa", method="DELETE", path=f"{API}/cas/{{name}}", roles=SECURITY,
              tag="trust-services", summary="Stop trusting a certification authority", status=204, errors=(404,)),
        Route(operation_id="listTsas", method="GET", path=f"{API}/tsas", roles=READERS, tag="trust-services",
              summary="Trusted timestamping authorities, in order of preference", response=page_schema(s["tsa"]),
              paginated=True),
        Route(operation_id="addTsa", method="POST", path=f"{API}/tsas", roles=SECURITY, tag="trust-services",
              summary="Trust an RFC 3161 timestamping authority (appended as least preferred)",
              request=s["add_tsa"], response=s["tsa"], status=201, errors=(400, 409)),
        Route(operation_id="removeTsa", method="DELETE", path=f"{API}/tsas/{{name}}", roles=SECURITY,
              tag="trust-services", summary="Stop trusting a timestamping authority", status=204, errors=(404,)),
        # --- transparency parameters (docs/transparency.md section 1)
        Route(operation_id="getTransparency", method="GET", path=f"{API}/transparency", roles=READERS,
              tag="trust-services", summary="The published transparency parameters set in the registry (null: "
              "the settings' are published)", response={"anyOf": [_transparency(instance), {"type": "null"}]},
              errors=()),
        Route(operation_id="setTransparency", method="PUT", path=f"{API}/transparency", roles=SECURITY,
              tag="trust-services", summary="Set the purposes, the portal's subsystem and the embargo entitlements "
              "(published from the next publication on)", request=_transparency(instance),
              response=_transparency(instance),
              errors=(400,)),
        # --- witness policies (docs/witness.md section 3)
        Route(operation_id="listWitnessPolicies", method="GET", path=f"{API}/witness-policies", roles=EVERYONE,
              tag="witness-policies", summary="Witness policies: which witnesses must cosign each server's logs",
              response=page_schema(s["witness_policy"]), paginated=True),
        Route(operation_id="getWitnessPolicy", method="GET", path=f"{API}/witness-policies/{{server_id}}",
              roles=EVERYONE, tag="witness-policies", summary="The witness policy of one security server",
              response=s["witness_policy"], errors=(400, 404)),
        Route(operation_id="setWitnessPolicy", method="PUT", path=f"{API}/witness-policies/{{server_id}}",
              roles=WITNESS_ADMINS, tag="witness-policies", summary="Set (create or replace) the witness policy of "
              "a security server, for all its logs (published from the next publication on)",
              request=s["set_witness_policy"], response=s["witness_policy"], errors=(400, 404, 409)),
        Route(operation_id="removeWitnessPolicy", method="DELETE", path=f"{API}/witness-policies/{{server_id}}",
              roles=WITNESS_ADMINS, tag="witness-policies", summary="Remove the witness policy of a security "
              "server (its logs are no longer witnessed from the next publication on)", status=204,
              errors=(400, 404)),
        # --- configuration-signing keys
        Route(operation_id="listSigningKeys", method="GET", path=f"{API}/signing-keys", roles=READERS,
              tag="signing-keys", summary="Configuration-signing keys, oldest first",
              response=page_schema(s["signing_key"]), paginated=True),
        Route(operation_id="createSigningKey", method="POST", path=f"{API}/signing-keys", roles=SECURITY,
              tag="signing-keys", summary="Generate a configuration-signing key, inactive: listed in the anchor, "
              "not signing yet (rollover, step 1)", response=s["signing_key"], status=201, errors=()),
        Route(operation_id="activateSigningKey", method="POST", path=f"{API}/signing-keys/{{keyid}}/activate",
              roles=SECURITY, tag="signing-keys", summary="Let an inactive key sign from the next publication on "
              "(rollover, step 3, once the new anchor is out)", response=s["signing_key"], errors=(400, 404, 409)),
        Route(operation_id="retireSigningKey", method="POST", path=f"{API}/signing-keys/{{keyid}}/retire",
              roles=SECURITY, tag="signing-keys", summary="Stop signing with a key (rollover, step 4; never the "
              "last active key)", response=s["signing_key"], errors=(400, 404, 409)),
        Route(operation_id="getAnchor", method="GET", path=f"{API}/anchor", roles=READERS, tag="signing-keys",
              summary="The anchor of the active keys, to hand out (rollover, step 2)",
              response={"type": "object", "description": "the anchor (docs/globalconf.md)"}, errors=()),
        # --- registration requests
        Route(operation_id="listRegistrationRequests", method="GET", path=requests, roles=EVERYONE,
              tag="registration-requests", summary="Registration requests, oldest first",
              response=page_schema(s["request"]), paginated=True,
              query=(Param(name="state", where="query", description="only requests in this state",
                           schema={"type": "string", "enum": ["submitted", "approved", "rejected"]}),)),
        Route(operation_id="getRegistrationRequest", method="GET", path=f"{requests}/{{request_id}}",
              roles=EVERYONE, tag="registration-requests", summary="One registration request",
              response=s["request"], errors=(400, 404)),
        Route(operation_id="approveRegistrationRequest", method="POST", path=f"{requests}/{{request_id}}/approve",
              roles=REGISTRATION, tag="registration-requests",
              summary="Approve a submitted request and apply it to the registry", request=s["decision"],
              response=s["request"], errors=(400, 404, 409)),
        Route(operation_id="rejectRegistrationRequest", method="POST", path=f"{requests}/{{request_id}}/reject",
              roles=REGISTRATION, tag="registration-requests", summary="Reject a submitted request",
              request=s["decision"], response=s["request"], errors=(400, 404, 409)),
        # --- published configuration
        Route(operation_id="listGlobalConfVersions", method="GET", path=f"{API}/globalconf/versions",
              roles=EVERYONE, tag="globalconf", summary="Published configuration versions, newest first",
              response=page_schema(s["version"]), paginated=True),
        Route(operation_id="publishGlobalConf", method="POST", path=f"{API}/globalconf/publish", roles=SYSADMIN,
              tag="globalconf", summary="Sign and publish the global configuration now", response=s["version"],
              status=201, errors=()),
    )


@functools.cache
def central_api(instance: str) -> ApiSpec:
    """The central server's admin API for ``instance`` (made once per instance)."""
    return ApiSpec(
        title="Gateway central server admin API",
        description="Members, subsystems, security servers, global groups, trusted CAs and TSAs, witness "
        "policies, configuration-signing keys, registration requests and published configuration versions of one "
        "central server, with its users, API keys and audit log. See docs/central-admin-api.md.",
        routes=_routes(instance), path_params=_path_params(instance),
    )


__all__ = ["EVERYONE", "READERS", "WITNESS_ADMINS", "central_api"]
