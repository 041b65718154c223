"""RFC 3161 timestamps on the client side: build a request, check a response, verify a stored token (pure).

Used by the message log (timestamping checkpoints) and by auditors (verifying stored tokens offline).
Nothing here assumes the development TSA: the TSA certificate comes from the global configuration, and
the caller is responsible for trusting it (it is listed there); this module checks that the token was
signed by exactly that certificate.

:func:`verify_token` checks, in order:

1. the token is a CMS ContentInfo with SignedData whose content type is id-ct-TSTInfo; the TSTInfo parses
   and is version 1;
2. the messageImprint's hash algorithm is SHA-256/384/512 and its digest equals ``data_hash``;
3. exactly one SignerInfo, and it names ``tsa_cert`` (issuer and serial, or subject key identifier);
4. the signed attributes: contentType is id-ct-TSTInfo; messageDigest is the digest of the TSTInfo bytes;
   an ESS signingCertificateV2 (or v1) attribute whose first certificate hash is ``tsa_cert``'s;
5. the signature over the signed attributes verifies with ``tsa_cert``'s key;
6. ``tsa_cert`` has extKeyUsage timeStamping and was valid at genTime.

:func:`check_response` first checks the TimeStampResp status (granted or grantedWithMods), then the token as
above, then the nonce (if one was sent) and the policy (if one is required).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asn1crypto import cms, core, tsp
from asn1crypto import x509 as a_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.errors import TimestampInvalid, TrustError
from gateway.trust.keys import verify_x509_signature

_IMPRINT_HASHES: dict[int, str] = {32: "sha256", 48: "sha384", 64: "sha512"}  # digest bytes -> name
_HASHLIB = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
_CRYPTO_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512(),
}


class TimeStampResp(core.Sequence):  # type: ignore[misc]  # asn1crypto ships no types: its bases are Any
    """RFC 3161 TimeStampResp with ``timeStampToken`` OPTIONAL, as the RFC has it (asn1crypto's is required,
    which cannot represent a rejection)."""

    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class TimestampToken:
    """A verified timestamp token."""

    gen_time: datetime
    serial: int
    policy: str
    hash_algorithm: str  # of the imprint: sha256, sha384 or sha512
    nonce: int | None
    token_der: bytes = field(repr=False)  # the ContentInfo bytes: store them, check with verify_token


def build_request(data_hash: bytes, *, nonce: int | None, cert_req: bool = True) -> bytes:
    """DER TimeStampReq for a digest (SHA-256, or SHA-384/512 by length), asking for the TSA certificate.

    Raises:
        ValueError: ``data_hash`` is not 32, 48 or 64 bytes, or ``nonce`` is negative.
    """
    alg = _IMPRINT_HASHES.get(len(data_hash))
    if alg is None:
        raise ValueError(f"data_hash has {len(data_hash)} bytes; expected a SHA-256, -384 or -512 digest")
    fields: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": alg}, "hashed_message": data_hash},
        "cert_req": cert_req,
    }
    if nonce is not None:
        if nonce < 0:
            raise ValueError("nonce must not be negative")
        fields["nonce"] = nonce
    der: bytes = tsp.TimeStampReq(fields).dump()
    return der


def _bad(message: str, fault: type[TrustError] = TrustError) -> TrustError:
    return fault(f"timestamp: {message}")


def _parse_token(token_der: bytes) -> tuple[cms.SignedData, tsp.TSTInfo, bytes]:
    try:
        info = cms.ContentInfo.load(token_der, strict=True)
        if info["content_type"].native != "signed_data":
            raise _bad(f"token is {info['content_type'].native}, not CMS SignedData")
        signed = info["content"]
        encap = signed["encap_content_info"]
        if encap["content_type"].native != "tst_info":
            raise _bad(f"token content is {encap['content_type'].native}, not a TSTInfo")
        tst_der = encap["content"].contents
        tst = tsp.TSTInfo.load(tst_der, strict=True)
        tst.native  # noqa: B018 - asn1crypto parses lazily; surface errors here
        signed.native  # noqa: B018
    except (ValueError, TypeError, KeyError) as e:
        raise _bad(f"token is not a DER CMS SignedData with a TSTInfo: {e}") from e
    if int(tst["version"]) != 1:
        raise _bad(f"TSTInfo version {int(tst['version'])} is not 1")
    return signed, tst, tst_der


def _names_cert(sid: cms.SignerIdentifier, cert: x509.Certificate) -> bool:
    a_cert = a_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    if sid.name == "issuer_and_serial_number":
        ias = sid.chosen
        return bool(ias["issuer"] == a_cert.issuer and ias["serial_number"].native == a_cert.serial_number)
    ski = a_cert.key_identifier
    return ski is not None and hmac.compare_digest(sid.chosen.native, ski)


def _attr(attrs: cms.CMSAttributes, name: str) -> Any:
    found = [a for a in attrs if a["type"].native == name]
    if len(found) != 1 or len(found[0]["values"]) != 1:
        raise _bad(f"signed attribute {name} must be present exactly once with one value")
    return found[0]["values"][0]


def verify_token(token_der: bytes, data_hash: bytes, tsa_cert: x509.Certificate) -> TimestampToken:
    """Verify a stored timestamp token over ``data_hash`` signed by ``tsa_cert`` (module docstring steps).

    Raises:
        TrustError: the token is malformed, about other data, or not validly signed by ``tsa_cert``.
    """
    # (1) SignedData over a TSTInfo
    signed, tst, tst_der = _parse_token(token_der)
    # (2) the imprint is of data_hash
    imprint = tst["message_imprint"]
    alg = imprint["hash_algorithm"]["algorithm"].native
    if alg not in _HASHLIB:
        raise _bad(f"imprint hash algorithm {alg} is not accepted")
    if not hmac.compare_digest(imprint["hashed_message"].native, data_hash):
        raise _bad("message imprint does not match the data")
    # (3) exactly one signer, and it is tsa_cert
    signer_infos = signed["signer_infos"]
    if len(signer_infos) != 1:
        raise _bad(f"token has {len(signer_infos)} signers; exactly one is required")
    si = signer_infos[0]
    subject = tsa_cert.subject.rfc4514_string()
    if not _names_cert(si["sid"], tsa_cert):
        raise _bad(f"token is not signed by the TSA certificate {subject}")
    # (4) the signed attributes bind the TSTInfo and the TSA certificate
    attrs = si["signed_attrs"]
    if not attrs.native:
        raise _bad("token has no signed attributes")
    digest_alg = si["digest_algorithm"]["algorithm"].native
    if digest_alg not in _HASHLIB:
        raise _bad(f"signer digest algorithm {digest_alg} is not accepted")
    if _attr(attrs, "content_type").native != "tst_info":
        raise _bad("signed contentType is not id-ct-TSTInfo")
    if not hmac.compare_digest(_attr(attrs, "message_digest").native, _HASHLIB[digest_alg](tst_der).digest()):
        raise _bad("signed messageDigest does not match the TSTInfo (token tampered with)")
    cert_der = tsa_cert.public_bytes(serialization.Encoding.DER)
    ess_names = {a["type"].native for a in attrs}
    if "signing_certificate_v2" in ess_names:
        ess_id = _attr(attrs, "signing_certificate_v2")["certs"][0]
        ess_alg = ess_id["hash_algorithm"]["algorithm"].native
        if ess_alg not in _HASHLIB:
            raise _bad(f"ESS certificate hash algorithm {ess_alg} is not accepted")
        expected = _HASHLIB[ess_alg](cert_der).digest()
    elif "signing_certificate" in ess_names:
        ess_id = _attr(attrs, "signing_certificate")["certs"][0]
        expected = hashlib.sha1(cert_der).digest()  # noqa: S324 - ESS v1 is defined with SHA-1
    else:
        raise _bad("token has no ESS signingCertificate attribute")
    if not hmac.compare_digest(ess_id["cert_hash"].native, expected):
        raise _bad(f"ESS signingCertificate does not name the TSA certificate {subject}")
    # (5) the signature over the signed attributes, as received but tagged as a SET (RFC 5652 5.4)
    attrs_der = attrs.dump()
    attrs_set = b"\x31" + attrs_der[1:]
    sig_alg = si["signature_algorithm"]
    try:
        # rsaEncryption and bare ecdsa name no hash: the signer's digestAlgorithm is used (RFC 5754)
        bare = sig_alg["algorithm"].native in ("rsassa_pkcs1v15", "ecdsa")
        sig_hash_name = digest_alg if bare else sig_alg.hash_algo
    except ValueError as e:
        raise _bad(f"signature algorithm {sig_alg['algorithm'].native} is not accepted") from e
    if sig_hash_name not in _CRYPTO_HASHES:
        raise _bad(f"signature hash {sig_hash_name} is not accepted")
    try:
        verify_x509_signature(tsa_cert.public_key(), si["signature"].native, attrs_set,
                              _CRYPTO_HASHES[sig_hash_name])
    except TrustError as e:
        raise _bad(f"signature by {subject} does not verify") from e
    # (6) a timestamping certificate, valid when the token was made
    gen_time: datetime = tst["gen_time"].native
    try:
        ekus = tsa_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        ekus = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.TIME_STAMPING not in ekus:
        raise _bad(f"certificate {subject} lacks extKeyUsage timeStamping")
    if not (tsa_cert.not_valid_before_utc <= gen_time <= tsa_cert.not_valid_after_utc):
        raise _bad(f"certificate {subject} was not valid at genTime {gen_time.isoformat()}")
    return TimestampToken(
        gen_time=gen_time, serial=tst["serial_number"].native, policy=tst["policy"].dotted,
        hash_algorithm=alg, nonce=tst["nonce"].native, token_der=token_der,
    )


def _status_text(status: tsp.PKIStatusInfo) -> str:
    parts = [str(status["status"].native)]
    if status["fail_info"].native:
        parts.append("failInfo " + ",".join(sorted(status["fail_info"].native)))
    if status["status_string"].native:
        parts.append(" ".join(status["status_string"].native))
    return "; ".join(parts)


def check_response(
    resp_der: bytes, *, data_hash: bytes, tsa_cert: x509.Certificate, nonce: int | None = None,
    policy: str | None = None,
) -> TimestampToken:
    """Check a TimeStampResp for ``data_hash`` from the TSA ``tsa_cert``; return the verified token.

    Raises:
        TimestampInvalid: (``TimestampingFailed``) not granted, malformed, nonce or policy mismatch, or the
            token fails :func:`verify_token`.
    """
    try:
        resp = TimeStampResp.load(resp_der, strict=True)
        status = resp["status"]
        status_name = status["status"].native
        token = resp["time_stamp_token"]
        token_der = token.dump() if token.native is not None else None
    except (ValueError, TypeError) as e:
        raise _bad(f"not a DER TimeStampResp: {e}", TimestampInvalid) from e
    if status_name not in ("granted", "granted_with_mods"):
        raise _bad(f"TSA refused: {_status_text(status)}", TimestampInvalid)
    if token_der is None:
        raise _bad("granted response carries no token", TimestampInvalid)
    try:
        result = verify_token(token_der, data_hash, tsa_cert)
    except TrustError as e:
        raise TimestampInvalid(e.message) from e
    if nonce is not None and result.nonce != nonce:
        raise _bad(f"nonce {result.nonce} does not match the request's {nonce}", TimestampInvalid)
    if policy is not None and result.policy != policy:
        raise _bad(f"policy {result.policy} is not the required {policy}", TimestampInvalid)
    return result

