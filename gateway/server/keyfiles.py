"""Where a security server keeps its key and certificate files (``[server] state_dir``), and the
self-signed certificate of its client-facing HTTPS port (I/O: files).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from gateway.errors import ConfigError
from gateway.identifiers import SecurityServerId
from gateway.trust import keys


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyFiles:
    """Where ``gateway server init`` keeps this server's keys and certificates (``[server] state_dir``)."""

    dir: Path

    @property
    def sign_key(self) -> Path:
        return self.dir / "sign.key"

    @property
    def sign_cert(self) -> Path:
        return self.dir / "sign.pem"

    @property
    def auth_key(self) -> Path:
        return self.dir / "auth.key"

    @property
    def auth_cert(self) -> Path:
        return self.dir / "auth.pem"

    @property
    def internal_key(self) -> Path:
        return self.dir / "internal.key"

    @property
    def internal_cert(self) -> Path:
        return self.dir / "internal.pem"

    def require(self) -> None:
        """Raises: ConfigError naming the first missing file."""
        for path in (self.sign_key, self.sign_cert, self.auth_key, self.auth_cert):
            if not path.is_file():
                raise ConfigError(
                    f"{path} is missing", hint="run 'gateway server init', get the CSRs signed, then "
                    "'gateway server import-cert'",
                )


def ensure_internal_tls(files: KeyFiles, server_id: SecurityServerId, *, now: datetime) -> None:
    """Create the self-signed TLS certificate of the client-facing HTTPS port if there is none
    (X-Road's "internal TLS certificate"; information systems pin it)."""
    if files.internal_cert.is_file() and files.internal_key.is_file():
        return
    key = keys.generate_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{server_id} internal TLS")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    keys.write_private_key(files.internal_key, key)
    keys.write_public_file(files.internal_cert, keys.cert_pem(cert).encode())
