"""OCSP (RFC 6960) on the client side: build a request, check a response (pure).

Used by security servers (their own certificates' status, stapled into messages) and by auditors (the
stapled responses in the message log). Nothing here assumes the development PKI: the issuer certificate
comes from the global configuration, and the response may be signed by the issuer itself or by a delegated
responder certificate that the issuer issued with extKeyUsage OCSPSigning (RFC 6960 section 4.2.2.2).

The checks of :func:`check_response`, in order (the numbers match the ``# (n)`` marks in the code):

1. the bytes are an OCSP response and its ``responseStatus`` is ``successful``;
2. the signer is found: the issuer, or a certificate carried in the response that the issuer issued
   directly, has OCSPSigning and is valid at ``now``; the responder ID names it;
3. the signature over ``tbsResponseData`` verifies with the signer's key;
4. exactly one single response matches the certificate's CertID (serial, issuer name hash, issuer key hash);
5. the nonce matches, if the caller sent one;
6. ``thisUpdate`` is not in the future (beyond :data:`CLOCK_SKEW`);
7. ``thisUpdate`` is not older than ``max_age_seconds`` (X-Road's ``ocspFreshnessSeconds``, 1 h default);
8. ``nextUpdate``, if present, has not passed.

A response that fails any check raises :class:`~gateway.errors.IncorrectValidationInfo` (a ``TrustError``,
without a side: the proxy that answers adds its own). A response that passes is returned as :class:`OcspStatus`
even when it says ``revoked`` or ``unknown``: the caller refuses those (``CertValidation``), with
:func:`require_good` for instance.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.errors import CertValidation, IncorrectValidationInfo, TrustError
from gateway.trust.keys import verify_x509_signature

CLOCK_SKEW = timedelta(seconds=60)  # tolerated difference between our clock and the responder's
CERT_ID_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,  # RFC 5019's CertID hash; SHA-1 is fine here (no collision resistance needed)
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

CertStatusName = Literal["good", "revoked", "unknown"]
_STATUS_NAMES: dict[ocsp.OCSPCertStatus, CertStatusName] = {
    ocsp.OCSPCertStatus.GOOD: "good",
    ocsp.OCSPCertStatus.REVOKED: "revoked",
    ocsp.OCSPCertStatus.UNKNOWN: "unknown",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class OcspStatus:
    """A verified OCSP answer about one certificate."""

    status: CertStatusName
    this_update: datetime
    next_update: datetime | None
    produced_at: datetime
    revocation_time: datetime | None = None
    revocation_reason: str | None = None  # RFC 5280 CRLReason name, e.g. "keyCompromise"
    serial: int
    response_der: bytes = field(repr=False)  # the bytes that were checked, to staple and to log


def _bad(message: str) -> TrustError:
    return IncorrectValidationInfo(f"OCSP response: {message}")


def _hash(alg: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(alg)
    h.update(data)
    return h.finalize()


def issuer_name_hash(issuer: x509.Certificate, alg: hashes.HashAlgorithm) -> bytes:
    """Hash of the issuer's DER-encoded subject name (RFC 6960 section 4.1.1 ``issuerNameHash``)."""
    return _hash(alg, issuer.subject.public_bytes())


def issuer_key_hash(issuer: x509.Certificate, alg: hashes.HashAlgorithm) -> bytes:
    """Hash of the issuer's subjectPublicKey BIT STRING value (``issuerKeyHash``).

    Raises:
        TrustError: a key type other than EC or RSA.
    """
    pub = issuer.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        raw = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    elif isinstance(pub, rsa.RSAPublicKey):
        raw = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    else:
        raise TrustError(f"issuer key of type {type(pub).__name__} is not supported")
    return _hash(alg, raw)


def build_request(
    cert: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None,
    hash_name: Literal["sha1", "sha256"] = "sha1",
) -> bytes:
    """DER of an OCSP request for ``cert`` (issued by ``issuer``), unsigned, optionally with a nonce.

    SHA-1 CertIDs are the default because every responder supports them (RFC 5019 section 2.1.1).
    X-Road sends no nonce, so that responses can be cached and shared; pass ``nonce`` to require a fresh one.
    """
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, CERT_ID_HASHES[hash_name]())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _find_signer(resp: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime) -> x509.Certificate:
    def named(c: x509.Certificate) -> bool:
        if resp.responder_name is not None:
            return c.subject == resp.responder_name
        key_hash = resp.responder_key_hash
        # ResponderID byKey is always SHA-1 (RFC 6960 section 4.2.1)
        return key_hash is not None and hmac.compare_digest(
            issuer_key_hash(c, hashes.SHA1()), key_hash  # noqa: S303
        )

    if named(issuer):
        return issuer
    for c in resp.certificates:
        if not named(c):
            continue
        who = f"responder certificate {c.subject.rfc4514_string()}"
        if c.issuer != issuer.subject:
            raise _bad(f"{who} was not issued by the certificate's issuer {issuer.subject.rfc4514_string()}")
        try:
            c.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError) as e:
            raise _bad(f"{who} is not signed by the issuer") from e
        try:
            ekus = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            ekus = x509.ExtendedKeyUsage([])
        if ExtendedKeyUsageOID.OCSP_SIGNING not in ekus:
            raise _bad(f"{who} lacks extKeyUsage OCSPSigning")
        if not (c.not_valid_before_utc - CLOCK_SKEW <= now <= c.not_valid_after_utc + CLOCK_SKEW):
            raise _bad(f"{who} is not valid at {now.isoformat()}")
        return c
    raise _bad("signed neither by the issuer nor by a responder certificate the issuer delegated to")


def check_response(
    response_der: bytes, *, cert: x509.Certificate, issuer: x509.Certificate, now: datetime,
    max_age_seconds: int, nonce: bytes | None = None,
) -> OcspStatus:
    """Verify an OCSP response about ``cert`` and return what it says (see the module docstring).

    Raises:
        IncorrectValidationInfo: the response is malformed,
            unsuccessful, badly signed, about another certificate, stale, from the future or expired.
        ValueError: ``now`` is naive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware UTC datetime")
    # (1) an OCSP response with responseStatus successful
    try:
        resp = ocsp.load_der_ocsp_response(response_der)
    except ValueError as e:
        raise _bad(f"not a valid OCSP response: {e}") from e
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise _bad(f"responder answered {resp.response_status.name.lower()}")
    # (2) the signer: the issuer, or a delegated responder certificate issued by it
    signer = _find_signer(resp, issuer, now)
    # (3) the signature over the bytes of tbsResponseData
    try:
        verify_x509_signature(signer.public_key(), resp.signature, resp.tbs_response_bytes,
                              resp.signature_hash_algorithm)
    except TrustError as e:
        raise _bad(f"signature by {signer.subject.rfc4514_string()} does not verify ({e.message})") from e
    # (4) exactly one single response about this certificate (serial and issuer hashes)
    matches = []
    for single in resp.responses:
        alg = single.hash_algorithm
        if alg.name not in CERT_ID_HASHES:
            continue
        if (
            single.serial_number == cert.serial_number
            and hmac.compare_digest(single.issuer_name_hash, issuer_name_hash(issuer, alg))
            and hmac.compare_digest(single.issuer_key_hash, issuer_key_hash(issuer, alg))
        ):
            matches.append(single)
    if len(matches) != 1:
        raise _bad(f"{len(matches)} answers are about certificate {cert.serial_number:X} of "
                   f"{issuer.subject.rfc4514_string()}; exactly one is required")
    single = matches[0]
    # (5) the nonce, if the request carried one
    if nonce is not None:
        try:
            got = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound as e:
            raise _bad("the nonce sent in the request is missing") from e
        if not hmac.compare_digest(got, nonce):
            raise _bad("the nonce does not match the request's")
    this_update = single.this_update_utc
    next_update = single.next_update_utc
    # (6) thisUpdate not in the future
    if this_update > now + CLOCK_SKEW:
        raise _bad(f"thisUpdate {this_update.isoformat()} is in the future (now {now.isoformat()})")
    # (7) fresh enough
    if now - this_update > timedelta(seconds=max_age_seconds):
        raise _bad(f"thisUpdate {this_update.isoformat()} is older than {max_age_seconds} s "
                   f"(now {now.isoformat()})")
    # (8) nextUpdate not passed
    if next_update is not None and next_update < now - CLOCK_SKEW:
        raise _bad(f"nextUpdate {next_update.isoformat()} has passed (now {now.isoformat()})")
    status = _STATUS_NAMES[single.certificate_status]
    reason = single.revocation_reason
    return OcspStatus(
        status=status, this_update=this_update, next_update=next_update, produced_at=resp.produced_at_utc,
        revocation_time=single.revocation_time_utc if status == "revoked" else None,
        revocation_reason=reason.value if (status == "revoked" and reason is not None) else None,
        serial=cert.serial_number, response_der=response_der,
    )


def require_good(status: OcspStatus) -> OcspStatus:
    """Return ``status`` if it says ``good``.

    Raises:
        CertValidation: revoked or unknown.
    """
    if status.status == "good":
        return status
    detail = ""
    if status.status == "revoked" and status.revocation_time is not None:
        detail = f" at {status.revocation_time.isoformat()}"
        if status.revocation_reason:
            detail += f" ({status.revocation_reason})"
    raise CertValidation(f"certificate {status.serial:X} is {status.status}{detail}")
