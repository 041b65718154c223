"""A throw-away PKI for tests: a development CA in a temporary directory, certificates on demand.

Import it from any test (``tests/`` is on ``sys.path`` through its ``conftest.py``)::

    from pkihelpers import make_pki

    def test_something(tmp_path):
        pki = make_pki(tmp_path / "pki")
        ss = pki.issue_auth("DEV/GOV/1001/ss1")          # key + cert objects, PEM paths
        member = pki.issue_sign("DEV/GOV/1001")
        staple = pki.ocsp_response(member.cert)            # DER, as the responder answers now
        pki.revoke(ss)                                     # keyCompromise, now

Everything is ECDSA P-256 unless asked otherwise, so a CA with a few certificates takes milliseconds.
Certificates are valid from five minutes before ``now`` for 730 days: nothing expires during a run.

Certificates the CA would not issue (an information system's TLS certificate, a configuration-signing key,
a certificate the CA never recorded, one that breaks the profile on purpose) come from :func:`make_cert`,
which builds one directly::

    cert = make_cert(generate_private_key(), "information system")             # self-signed, valid now
    stray = make_cert(key, "stray", issuer=(pki.ca.ca_key, pki.ca_cert), serial=0x5EED)
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from gateway.dev.pki import tsa
from gateway.dev.pki.ca import CertRecord, DevCA
from gateway.dev.pki.ocsp_responder import respond as ocsp_respond
from gateway.identifiers import MemberId, SecurityServerId
from gateway.trust.certprofile import CertKind, Identity, build_csr
from gateway.trust.keys import KeyType, PrivateKey, cert_sha256_hex, generate_private_key, write_private_key
from gateway.trust.timestamp import build_request as build_ts_request

KeyPair = tuple[PrivateKey, x509.Certificate]


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def make_cert(
    key: PrivateKey,
    subject: str | x509.Name,
    *,
    issuer: KeyPair | None = None,
    now: datetime | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    serial: int | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """A certificate for ``key``'s public key, built directly (no CSR, no profile check), signed with SHA-256.

    ``subject`` is a common name or a whole name. Self-signed unless ``issuer`` (a key and its certificate)
    signs it. Valid from ``not_before`` (default five minutes before ``now``) to ``not_after`` (default 730
    days after ``now``); a random serial unless ``serial``; ``extensions`` are (value, critical) pairs,
    added in order (none by default).
    """
    if isinstance(subject, str):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_key, issuer_name = (key, subject) if issuer is None else (issuer[0], issuer[1].subject)
    at = _now(now)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(at - timedelta(minutes=5) if not_before is None else not_before)
        .not_valid_after(at + timedelta(days=730) if not_after is None else not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedCert:
    """A key and the certificate the test CA issued for it, also written as PEM files."""

    kind: CertKind
    identity: Identity
    key: PrivateKey
    cert: x509.Certificate
    key_path: Path
    cert_path: Path

    @property
    def sha256(self) -> str:
        return cert_sha256_hex(self.cert)

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


class ThrowawayPki:
    """A :class:`DevCA` in a directory plus shortcuts (not named Test*, so pytest does not collect it)."""

    def __init__(self, ca: DevCA, directory: Path) -> None:
        self.ca = ca
        self.directory = directory

    @property
    def ca_cert(self) -> x509.Certificate:
        return self.ca.ca_cert

    @property
    def tsa_cert(self) -> x509.Certificate:
        return self.ca.tsa_cert

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def tsa_cert_path(self) -> Path:
        return self.directory / "tsa.pem"

    @property
    def ocsp_cert_path(self) -> Path:
        return self.directory / "ocsp.pem"

    def issue(
        self,
        kind: CertKind,
        identity: Identity,
        *,
        name: str | None = None,
        key_type: KeyType = "ec-p256",
        now: datetime | None = None,
    ) -> IssuedCert:
        """Generate a key, make a CSR, have the CA issue it, and write ``<stem>.key``/``<stem>.pem``."""
        key = generate_private_key(key_type)
        cert = self.ca.issue(
            build_csr(key, identity, kind=kind, name=name),
            kind=kind,
            expected_identity=identity,
            now=_now(now),
        )
        stem = f"{kind}-{identity.encoded_id()}-{cert.serial_number:x}"[:120]
        key_path = self.directory / "issued" / f"{stem}.key"
        cert_path = self.directory / "issued" / f"{stem}.pem"
        write_private_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return IssuedCert(
            kind=kind, identity=identity, key=key, cert=cert, key_path=key_path, cert_path=cert_path
        )

    def issue_auth(self, server: SecurityServerId | str, **kw: object) -> IssuedCert:
        """An authentication certificate for a security server (``DEV/GOV/1001/ss1``)."""
        ident = SecurityServerId.parse(server) if isinstance(server, str) else server
        return self.issue("auth", ident, **kw)  # type: ignore[arg-type]

    def issue_sign(self, member: MemberId | str, **kw: object) -> IssuedCert:
        """A signing certificate for a member (``DEV/GOV/1001``)."""
        ident = MemberId.parse(member) if isinstance(member, str) else member
        return self.issue("sign", ident, **kw)  # type: ignore[arg-type]

    def revoke(
        self,
        cert: IssuedCert | x509.Certificate,
        *,
        reason: str = "keyCompromise",
        now: datetime | None = None,
    ) -> CertRecord:
        serial = cert.cert.serial_number if isinstance(cert, IssuedCert) else cert.serial_number
        return self.ca.revoke(serial, reason=reason, now=_now(now))

    def ocsp_response(
        self,
        cert: IssuedCert | x509.Certificate,
        *,
        now: datetime | None = None,
        validity_seconds: int = 3600,
    ) -> bytes:
        """The DER OCSP response the responder gives for ``cert`` at ``now`` (no network)."""
        from gateway.trust.ocsp import build_request

        c = cert.cert if isinstance(cert, IssuedCert) else cert
        return ocsp_respond(build_request(c, self.ca_cert), self.ca.ocsp_state(validity_seconds), _now(now))

    def timestamp_response(
        self, data_hash: bytes, *, now: datetime | None = None, nonce: int | None = None
    ) -> bytes:
        """The DER TimeStampResp the TSA gives for ``data_hash`` at ``now`` (no network)."""
        return tsa.respond(
            build_ts_request(data_hash, nonce=nonce),
            tsa_key=self.ca.tsa_key,
            tsa_cert=self.ca.tsa_cert,
            now=_now(now),
            serial=secrets.randbits(64) | 1,
        )


def make_pki(
    directory: Path, *, name: str = "Test CA", now: datetime | None = None, ocsp_url: str | None = None
) -> ThrowawayPki:
    """A fresh development CA written to ``directory`` (created if missing)."""
    return ThrowawayPki(DevCA.init(directory, name=name, now=_now(now), ocsp_url=ocsp_url), directory)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
