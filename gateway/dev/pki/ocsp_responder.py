"""The development CA's OCSP responder, RFC 6960 (pure core: request bytes and state in, response bytes out).

Answers, for a request about one certificate (cryptography parses one CertID per request; a request
listing several is answered ``malformedRequest``):

=============================================== ===============================================
request                                          answer
=============================================== ===============================================
not a DER OCSPRequest                            responseStatus ``malformedRequest``
CertID hash algorithm other than SHA-1/2         responseStatus ``malformedRequest``
issuer name or key hash not of this CA           responseStatus ``unauthorized`` (RFC 6960 2.3:
                                                 we are not authoritative for that issuer)
serial this CA never issued                      ``successful``, certStatus ``unknown``
serial revoked                                   ``successful``, certStatus ``revoked`` (time, reason)
serial issued and not revoked                    ``successful``, certStatus ``good``
=============================================== ===============================================

Successful responses are signed with SHA-256 by the delegated responder certificate (extKeyUsage
OCSPSigning, issued by the CA), which is included in the response; the responder ID is its key hash.
``thisUpdate`` is ``now``, ``nextUpdate`` is ``now`` plus the state's validity (``producedAt`` is the
signing time: cryptography reads the clock for it).
A nonce in the request is echoed (RFC 8954).
"""

from __future__ import annotations

import hmac
from collections.abc import Container, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from gateway.trust.keys import PrivateKey
from gateway.trust.ocsp import CERT_ID_HASHES, issuer_key_hash, issuer_name_hash


@dataclass(frozen=True, slots=True, kw_only=True)
class Revocation:
    """Why and when a certificate was revoked."""

    revoked_at: datetime
    reason: x509.ReasonFlags | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OcspResponderState:
    """What the responder needs: the CA, its delegated responder, and the status of every serial."""

    issuer_cert: x509.Certificate
    responder_cert: x509.Certificate
    responder_key: PrivateKey
    issued: Container[int]  # serials this CA issued
    revoked: Mapping[int, Revocation]
    validity_seconds: int = 3600  # seconds from thisUpdate to nextUpdate; X-Road's freshness default


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


def respond(request_der: bytes, state: OcspResponderState, now: datetime) -> bytes:
    """Answer one DER OCSP request (see the module docstring for every case). Never raises for bad input.

    Raises:
        ValueError: ``now`` is naive (a bug in the caller).
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware UTC datetime")
    # (1) a well-formed request with a CertID hash we support
    try:
        req = ocsp.load_der_ocsp_request(request_der)
        alg = req.hash_algorithm
        nonce_ext = None
        for ext in req.extensions:
            if isinstance(ext.value, x509.OCSPNonce):
                nonce_ext = ext.value
    # UnsupportedAlgorithm: an unknown CertID hash OID; NotImplementedError: several CertIDs
    except (ValueError, UnsupportedAlgorithm, NotImplementedError):
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    if alg.name not in CERT_ID_HASHES:
        return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
    # (2) about a certificate of our CA: both issuer hashes match, else we are not authoritative
    issuer = state.issuer_cert
    if not (
        hmac.compare_digest(req.issuer_name_hash, issuer_name_hash(issuer, alg))
        and hmac.compare_digest(req.issuer_key_hash, issuer_key_hash(issuer, alg))
    ):
        return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    # (3) the status of the serial
    serial = req.serial_number
    revocation = state.revoked.get(serial)
    revocation_time: datetime | None = None
    reason: x509.ReasonFlags | None = None
    if serial not in state.issued:
        cert_status = ocsp.OCSPCertStatus.UNKNOWN
    elif revocation is not None:
        cert_status = ocsp.OCSPCertStatus.REVOKED
        revocation_time = revocation.revoked_at
        # unspecified (0) is left out, as RFC 5280 section 5.3.1 asks
        reason = None if revocation.reason == x509.ReasonFlags.unspecified else revocation.reason
    else:
        cert_status = ocsp.OCSPCertStatus.GOOD
    # (4) the response, echoing the request's CertID and nonce, signed by the delegated responder
    this_update = now.replace(microsecond=0)
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=req.issuer_name_hash, issuer_key_hash=req.issuer_key_hash,
            serial_number=serial, algorithm=alg, cert_status=cert_status, this_update=this_update,
            next_update=this_update + timedelta(seconds=state.validity_seconds),
            revocation_time=revocation_time, revocation_reason=reason,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, state.responder_cert)
        .certificates([state.responder_cert])
    )
    if nonce_ext is not None:
        builder = builder.add_extension(nonce_ext, critical=False)
    response = builder.sign(state.responder_key, hashes.SHA256())
    return response.public_bytes(serialization.Encoding.DER)
