"""Who may talk to whom: checks on peer authentication certificates and stapled signing certificates (pure).

docs/architecture.md section 3. A peer security server is accepted only if (1) its certificate chains to a CA trusted
in the global configuration, (2) it is valid now, (3) its SHA-256 fingerprint is registered in the global
configuration for the server it must be, and (4) an OCSP response from that CA's responder says ``good``.
A signing certificate must (1) chain to a trusted CA, (2) be valid at signing time, (3) follow the signing
profile and name the member that the message claims as its client (or provider), and (4) come with a fresh
stapled OCSP response that says ``good``.

The OCSP responses themselves are fetched by the I/O shell (:mod:`gateway.proxy.ocspcache`) and handed in;
every function here is a pure function of the certificate, the configuration, the response bytes and ``now``.
Refusals are raised as fault classes of :mod:`gateway.errors`, without a side (the proxy names itself when it
answers): :class:`~gateway.errors.SslAuthenticationFailed` for a peer's authentication certificate,
:class:`~gateway.errors.CertValidation` for a signing certificate, and
:class:`~gateway.errors.IncorrectValidationInfo` for an OCSP response that cannot be used.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509

from gateway.errors import CertValidation, GatewayError, SslAuthenticationFailed, TrustError
from gateway.globalconf.model import CertificateAuthority, GlobalConf
from gateway.identifiers import MemberId, SecurityServerId
from gateway.trust import certprofile, ocsp
from gateway.trust.keys import cert_sha256_hex


def check_chain(
    cert: x509.Certificate, conf: GlobalConf, *, now: datetime, fault: type[TrustError],
) -> CertificateAuthority:
    """Steps (1)-(2) common to both kinds: a trusted issuer and a validity period that includes ``now``.

    Raises:
        TrustError: ``fault``, naming the certificate and what is wrong.
    """
    subject = cert.subject.rfc4514_string()
    # (1) issued by a CA of the global configuration (issuer name and signature both checked)
    ca = conf.ca_for(cert)
    if ca is None:
        raise fault(f"certificate {subject} is not issued by a CA trusted in the global configuration")
    # (2) valid now
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise fault(
            f"certificate {subject} is not valid at {now.isoformat()} (valid "
            f"{cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()})",
        )
    return ca


def check_peer_auth_cert(
    cert: x509.Certificate,
    conf: GlobalConf,
    *,
    now: datetime,
    expected: SecurityServerId | None,
) -> SecurityServerId:
    """Check a peer's TLS certificate before any request byte is sent or accepted; return the peer's id.

    ``expected`` is the server we dialled (client side) or ``None`` on the server side, where the
    certificate itself tells which registered server is calling. OCSP is checked separately with
    :func:`check_ocsp`.

    Raises:
        SslAuthenticationFailed: untrusted issuer, not valid now, or not registered for the server.
    """
    check_chain(cert, conf, now=now, fault=SslAuthenticationFailed)
    # (3) registration binds the certificate to a server; the subject alone never does
    fingerprint = cert_sha256_hex(cert)
    server = conf.server_by_auth_cert(fingerprint)
    if server is None:
        raise SslAuthenticationFailed(
            f"authentication certificate {fingerprint[:16]}... is not registered for any security server "
            "in the global configuration",
        )
    if expected is not None and server.id != expected:
        raise SslAuthenticationFailed(f"authentication certificate is registered for {server.id}, not for {expected}")
    return server.id


def check_ocsp(
    cert: x509.Certificate,
    response_der: bytes,
    ca: CertificateAuthority,
    *,
    now: datetime,
    max_age_seconds: int,
    fault: type[TrustError],
) -> ocsp.OcspStatus:
    """Step (4): a fresh OCSP response from the CA that says ``good``.

    Raises:
        IncorrectValidationInfo: a malformed or stale response, or one for another certificate or issuer.
        TrustError: ``fault`` for a revoked or unknown certificate.
    """
    status = ocsp.check_response(
        response_der, cert=cert, issuer=ca.certificate, now=now, max_age_seconds=max_age_seconds,
    )
    if status.status != "good":
        detail = ""
        if status.revocation_time is not None:
            detail = f" since {status.revocation_time.isoformat()}"
            if status.revocation_reason:
                detail += f" ({status.revocation_reason})"
        raise fault(f"certificate {cert.subject.rfc4514_string()} is {status.status}{detail} according to OCSP")
    return status


def check_signing_cert(
    cert_der: bytes,
    ocsp_der: bytes,
    conf: GlobalConf,
    *,
    member: MemberId,
    now: datetime,
) -> x509.Certificate:
    """Validate a stapled signing certificate for a message whose signer must be ``member``.

    Raises:
        CertValidation: untrusted, not valid now, not a signing certificate, wrong member, revoked or unknown.
        IncorrectValidationInfo: the OCSP response is malformed, stale, or for another certificate.
    """
    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError as e:
        raise CertValidation(f"stapled signing certificate is not a valid DER certificate: {e}") from e
    ca = check_chain(cert, conf, now=now, fault=CertValidation)
    # (3) the signing profile names the member
    try:
        signer = certprofile.sign_identity_of(cert)
    except GatewayError as e:
        raise CertValidation(f"stapled certificate is not a signing certificate: {e.message}") from e
    if signer != member:
        raise CertValidation(f"message is signed by {signer}, but it must be signed by {member}")
    # (4) fresh OCSP, good (a response that cannot be used is IncorrectValidationInfo from ocsp.check_response)
    check_ocsp(cert, ocsp_der, ca, now=now, max_age_seconds=conf.ocsp_freshness_seconds, fault=CertValidation)
    return cert
