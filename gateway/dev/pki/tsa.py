"""The development timestamping authority, RFC 3161 (pure core: request bytes in, response bytes out).

A granted response carries a CMS SignedData (RFC 5652) whose content is the TSTInfo:

* ``policy`` :data:`TSA_POLICY_OID` (a UUID-based OID, ITU-T X.667 arc ``2.25``, needing no registration);
* ``messageImprint`` copied from the request; ``serialNumber`` given by the caller; ``genTime`` = ``now``
  (whole seconds); ``accuracy`` 1 s; ``nonce`` echoed when present;
* the TSA certificate (and ``chain``) in ``certificates`` when the request sets ``certReq``;
* one SignerInfo (issuerAndSerialNumber), digest SHA-256, signed attributes ``contentType`` (id-ct-TSTInfo),
  ``messageDigest`` and ``signingCertificateV2`` (RFC 5035 ESSCertIDv2: SHA-256 of the TSA certificate plus
  its issuer and serial), which ``openssl ts -verify`` requires; ECDSA or RSA PKCS#1 v1.5 signature.

Refusals (``status`` rejection, RFC 3161 section 2.4.2 ``failInfo``):

=================================================== ======================
request                                              failInfo
=================================================== ======================
not DER TimeStampReq, or version is not 1            ``badDataFormat``
imprint hash not SHA-256/384/512, or wrong length    ``badAlg``
``reqPolicy`` other than ours                        ``unacceptedPolicy``
any extension                                        ``unacceptedExtension``
=================================================== ======================
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as a_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.trust.keys import PrivateKey, sign_bytes
from gateway.trust.timestamp import TimeStampResp

TSA_POLICY_OID = "2.25.319547589685108096910553797435094727332"  # dev TSA policy; see docs/pki.md
IMPRINT_HASHES: dict[str, int] = {"sha256": 32, "sha384": 48, "sha512": 64}  # name -> digest bytes
ACCURACY_SECONDS = 1  # genTime is rounded down to whole seconds


def _rejection(fail: str, text: str) -> bytes:
    resp = TimeStampResp({
        "status": {"status": "rejection", "status_string": [text], "fail_info": tsp.PKIFailureInfo({fail})},
    })
    der: bytes = resp.dump()
    return der


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _signed_attrs(tst_der: bytes, tsa_cert: x509.Certificate) -> cms.CMSAttributes:
    a_cert = a_x509.Certificate.load(_der(tsa_cert))
    ess = tsp.SigningCertificateV2({
        "certs": [{
            # hash_algorithm left at its DEFAULT (SHA-256), so it is omitted from the DER
            "cert_hash": hashlib.sha256(_der(tsa_cert)).digest(),
            "issuer_serial": {
                "issuer": [a_x509.GeneralName(name="directory_name", value=a_cert.issuer)],
                "serial_number": a_cert.serial_number,
            },
        }],
    })
    attrs = [
        cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
        cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(tst_der).digest()]}),
        cms.CMSAttribute({"type": "signing_certificate_v2", "values": [ess]}),
    ]
    # DER orders a SET OF by encoding; verifiers (OpenSSL) re-encode before checking the signature
    attrs.sort(key=lambda a: a.dump())
    return cms.CMSAttributes(attrs)


def respond(
    request_der: bytes, *, tsa_key: PrivateKey, tsa_cert: x509.Certificate,
    chain: Sequence[x509.Certificate] = (), now: datetime, serial: int, policy: str = TSA_POLICY_OID,
) -> bytes:
    """Answer one DER TimeStampReq with a DER TimeStampResp (granted or rejection); bad input never raises.

    Raises:
        ValueError: ``now`` is naive or ``serial`` is not positive (bugs in the caller).
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware UTC datetime")
    if serial <= 0:
        raise ValueError("serial must be positive")
    # (1) a DER TimeStampReq, version 1
    try:
        req = tsp.TimeStampReq.load(request_der, strict=True)
        req.native  # noqa: B018 - asn1crypto parses lazily; force it here so errors surface now
        version = int(req["version"])
    except (ValueError, TypeError) as e:
        return _rejection("bad_data_format", f"not a DER TimeStampReq: {e}")
    if version != 1:
        return _rejection("bad_data_format", f"TimeStampReq version {version} is not supported; expected 1")
    # (2) an imprint hash we accept, of the right length
    imprint = req["message_imprint"]
    alg_name = imprint["hash_algorithm"]["algorithm"].native
    if alg_name not in IMPRINT_HASHES:
        return _rejection("bad_alg", f"hash algorithm {alg_name} is not accepted; use SHA-256, -384 or -512")
    if len(imprint["hashed_message"].native) != IMPRINT_HASHES[alg_name]:
        return _rejection("bad_alg", f"hashed message is not a {alg_name} digest (wrong length)")
    # (3) our policy, no extensions
    req_policy = req["req_policy"].native
    if req_policy is not None and req["req_policy"].dotted != policy:
        asked = req["req_policy"].dotted
        return _rejection("unaccepted_policy", f"policy {asked} is not offered; use {policy}")
    if req["extensions"].native:
        return _rejection("unaccepted_extensions", "request extensions are not supported")
    # (4) the TSTInfo
    tst_fields: dict[str, object] = {
        "version": "v1",
        "policy": policy,
        "message_imprint": imprint.copy(),
        "serial_number": serial,
        "gen_time": core.GeneralizedTime(now.replace(microsecond=0)),
        "accuracy": {"seconds": ACCURACY_SECONDS},
    }
    if req["nonce"].native is not None:
        tst_fields["nonce"] = req["nonce"].native
    tst_info = tsp.TSTInfo(tst_fields)
    tst_der = tst_info.dump()
    # (5) the signed attributes, and the signature over their DER (as a SET, RFC 5652 section 5.4)
    signed_attrs = _signed_attrs(tst_der, tsa_cert)
    alg, signature = sign_bytes(tsa_key, signed_attrs.dump())
    a_cert = a_x509.Certificate.load(_der(tsa_cert))
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier(
            name="issuer_and_serial_number",
            value={"issuer": a_cert.issuer, "serial_number": a_cert.serial_number},
        ),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
        "signed_attrs": signed_attrs,
        "signature_algorithm": algos.SignedDigestAlgorithm(
            {"algorithm": "sha256_ecdsa" if alg == "ecdsa-p256-sha256" else "sha256_rsa"}
        ),
        "signature": signature,
    })
    # (6) the SignedData token, with the certificates if asked for
    signed_data: dict[str, object] = {
        "version": "v3",
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
        "encap_content_info": {
            "content_type": "tst_info",
            "content": core.ParsableOctetString(tst_der),
        },
        "signer_infos": [signer_info],
    }
    if req["cert_req"].native:
        signed_data["certificates"] = [
            a_x509.Certificate.load(_der(c)) for c in (tsa_cert, *chain)
        ]
    token = cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData(signed_data)})
    der: bytes = TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token}).dump()
    return der
