"""TLS contexts for the server-to-server channel and the client-facing HTTPS port (I/O: reads key files).

Between security servers: TLS 1.3 by default (1.2 with AEAD suites only when ``allow_tls12`` is set), mutual
authentication with authentication certificates. The handshake checks the chain against the CAs trusted in the
global configuration; whether the certificate is *registered* for the server, and its OCSP status, are checked
by :mod:`gateway.globalconf.peertrust` right after the handshake and before any request byte is sent or accepted.
Hostnames are not checked: registration in the global configuration binds a certificate to a server
(docs/architecture.md section 3), never a name in the certificate.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.errors import ConfigError

# AEAD-only suites with forward secrecy, for TLS 1.2 when it is allowed at all.
TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"


def _ca_pem(certs: Iterable[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)


def _base(ctx: ssl.SSLContext, *, allow_tls12: bool) -> ssl.SSLContext:
    if allow_tls12:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(TLS12_CIPHERS)
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert_path: str | None, key_path: str, password: bytes | None) -> None:
    if cert_path is None:  # no authentication certificate yet: a server context refuses every handshake
        return
    try:
        ctx.load_cert_chain(cert_path, key_path, password=password)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load TLS certificate {cert_path} with key {key_path}: {e}") from e


def _load_cas(ctx: ssl.SSLContext, cas: Iterable[x509.Certificate]) -> None:
    pem = _ca_pem(cas)
    if pem:
        ctx.load_verify_locations(cadata=pem)


def peer_server_context(
    cert_path: str | None, key_path: str, trusted_cas: Iterable[x509.Certificate], *, allow_tls12: bool = False,
    password: bytes | None = None,
) -> ssl.SSLContext:
    """The server proxy's context: our authentication certificate, a client certificate required.

    ``cert_path`` None: the server has no authentication certificate yet (it started uninitialised); the
    context then refuses every handshake until one is loaded into it (``load_cert_chain``)."""
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), allow_tls12=allow_tls12)
    _load_chain(ctx, cert_path, key_path, password)
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_cas(ctx, trusted_cas)
    return ctx


def peer_client_context(
    cert_path: str | None, key_path: str, trusted_cas: Iterable[x509.Certificate], *, allow_tls12: bool = False,
    password: bytes | None = None,
) -> ssl.SSLContext:
    """The client proxy's context for connections to peers: present our authentication certificate."""
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), allow_tls12=allow_tls12)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_chain(ctx, cert_path, key_path, password)
    _load_cas(ctx, trusted_cas)
    return ctx


def add_trusted_cas(ctx: ssl.SSLContext, cas: Iterable[x509.Certificate]) -> None:
    """Add CAs that a new global configuration trusts (removals are enforced by peertrust's chain check)."""
    _load_cas(ctx, cas)


def client_facing_context(
    cert_path: str, key_path: str, *, client_cas: Iterable[x509.Certificate] = (),
) -> ssl.SSLContext:
    """HTTPS for information systems; a client certificate is requested (optional) so that subsystems using
    ``https-cert`` authentication can present theirs; the proxy checks it against the registered fingerprints.

    ``client_cas`` are the registered information-system certificates (``ServerConfStore.is_certificates``):
    OpenSSL refuses, during the handshake, a client certificate that does not chain to a trusted one, so the
    registered certificates themselves are the trust anchors (partial chains allowed, so that a registered
    certificate issued by some internal CA is accepted on its own). Add newly registered ones with
    :func:`add_trusted_cas`; one removed stays a TLS trust anchor until restart but is refused by the proxy's
    fingerprint check.
    """
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), allow_tls12=True)
    _load_chain(ctx, cert_path, key_path, None)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    cas = list(client_cas)
    if cas:
        _load_cas(ctx, cas)
    return ctx
