"""The development certification authority (I/O on its directory, ``certs/`` by default).

Layout of the directory (see ``docs/pki.md``):

=================== ====== ===================================================================
file                mode   content
=================== ====== ===================================================================
``ca.pem``          0644   self-signed CA certificate (ECDSA P-256)
``ca.key``          0600   its private key (PKCS#8 PEM)
``ocsp.pem``/.key   0644/0600 delegated OCSP responder certificate (extKeyUsage OCSPSigning) and key
``tsa.pem``/.key    0644/0600 timestamping certificate (extKeyUsage timeStamping, critical) and key
``index.json``      0644   every issued certificate: serial, kind, identity, validity, status, PEM
=================== ====== ===================================================================

Private keys never leave the directory. Every file is written to a temporary file and renamed into place.
:meth:`DevCA.create` makes a CA in memory only (nothing on disk), for tests and ``gateway demo``.
The CA issues only what it was asked to certify: :meth:`DevCA.issue` takes the identity the operator
expects and refuses a CSR that names another one.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from gateway.dev.pki.ocsp_responder import OcspResponderState, Revocation
from gateway.errors import PkiError
from gateway.files import private_dir
from gateway.trust.certprofile import (
    CertKind,
    Identity,
    a_kind,
    csr_identity,
    key_usage,
    kind_of_identity,
    profile_extensions,
    subject_name,
)
from gateway.trust.keys import (
    PrivateKey,
    cert_pem,
    cert_sha256_hex,
    generate_private_key,
    key_type_of,
    read_private_key,
    write_private_key,
    write_public_file,
)

INDEX_FORMAT = 1
CA_VALIDITY_DAYS = 3650  # days; the dev CA, its OCSP responder and TSA certificates
BACKDATE = timedelta(minutes=5)  # notBefore is this far before issue time, for peers with a slow clock
SERIAL_BITS = 128  # random serial numbers (CA/Browser Forum asks for at least 64 bits of entropy)
# RFC 5280 CRLReason names; removeFromCRL is for delta CRLs only
REASONS: tuple[str, ...] = tuple(
    r.value for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl
)

CertStatusName = Literal["good", "revoked"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CertRecord:
    """One issued certificate, as kept in ``index.json``."""

    serial: int
    kind: CertKind
    identity: str
    subject: str
    not_before: datetime
    not_after: datetime
    sha256: str  # hex fingerprint over the DER
    status: CertStatusName = "good"
    revoked_at: datetime | None = None
    reason: str | None = None  # RFC 5280 CRLReason name, e.g. keyCompromise
    pem: str

    @property
    def serial_hex(self) -> str:
        return f"{self.serial:X}"

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.pem.encode("ascii"))

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": self.serial_hex, "kind": self.kind, "identity": self.identity, "subject": self.subject,
            "not_before": _fmt(self.not_before), "not_after": _fmt(self.not_after), "sha256": self.sha256,
            "status": self.status, "revoked_at": _fmt(self.revoked_at) if self.revoked_at else None,
            "reason": self.reason, "pem": self.pem,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CertRecord:
        return cls(
            serial=int(d["serial"], 16), kind=d["kind"], identity=d["identity"], subject=d["subject"],
            not_before=_parse(d["not_before"]), not_after=_parse(d["not_after"]), sha256=d["sha256"],
            status=d["status"], revoked_at=_parse(d["revoked_at"]) if d.get("revoked_at") else None,
            reason=d.get("reason"), pem=d["pem"],
        )


def _fmt(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _check_now(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be an aware UTC datetime")
    return now.astimezone(UTC).replace(microsecond=0)


def parse_serial(text: str) -> int:
    """Parse a serial number as printed by ``gateway pki list`` (hex, ``:`` separators and ``0x`` allowed).

    Raises:
        PkiError: not a hexadecimal number.
    """
    cleaned = text.strip().replace(":", "").lower().removeprefix("0x")
    try:
        return int(cleaned, 16)
    except ValueError as e:
        raise PkiError(f"serial {text!r} is not a hexadecimal number") from e


def parse_reason(text: str) -> x509.ReasonFlags:
    """Parse an RFC 5280 CRLReason name (``keyCompromise``, ``superseded``...).

    Raises:
        PkiError: an unknown reason.
    """
    for r in x509.ReasonFlags:
        if r.value == text and r.value in REASONS:
            return r
    raise PkiError(f"unknown revocation reason {text!r}; expected one of {', '.join(REASONS)}")


def _name(common_name: str, org: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
    ])


def _random_serial() -> int:
    return secrets.randbits(SERIAL_BITS) | 1  # never zero


def _load_csr(csr: x509.CertificateSigningRequest | bytes | str) -> x509.CertificateSigningRequest:
    if isinstance(csr, x509.CertificateSigningRequest):
        return csr
    data = csr.encode("ascii", "replace") if isinstance(csr, str) else csr
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as e:
        raise PkiError(f"not a valid certificate signing request (PEM or DER): {e}") from e


class DevCA:
    """The development CA: issues end-entity certificates from CSRs, revokes them, feeds the OCSP responder.

    Not thread-safe; one process writes the index at a time (the ``gateway pki`` commands). A running
    ``gateway pki serve`` picks up changes made by another process through :meth:`refresh`.
    """

    def __init__(
        self, *, directory: Path | None, name: str, ca_key: PrivateKey, ca_cert: x509.Certificate,
        ocsp_key: PrivateKey, ocsp_cert: x509.Certificate, tsa_key: PrivateKey, tsa_cert: x509.Certificate,
        ocsp_url: str | None, records: dict[int, CertRecord],
    ) -> None:
        self.directory = directory
        self.name = name
        self.ca_key = ca_key
        self.ca_cert = ca_cert
        self.ocsp_key = ocsp_key
        self.ocsp_cert = ocsp_cert
        self.tsa_key = tsa_key
        self.tsa_cert = tsa_cert
        self.ocsp_url = ocsp_url
        self._records = records
        self._index_stamp: tuple[int, int, int] | None = None
        self._state_cache: dict[int, OcspResponderState] = {}

    # ---- creation and loading ------------------------------------------------------------------

    @classmethod
    def create(cls, *, name: str, now: datetime, ocsp_url: str | None = None) -> DevCA:
        """A new CA in memory only (no files): for tests and embedded demos.

        Raises:
            ValueError: ``now`` is naive.
        """
        now = _check_now(now)
        not_before = now - BACKDATE
        not_after = now + timedelta(days=CA_VALIDITY_DAYS)
        ca_key = generate_private_key("ec-p256")
        ca_name = _name(name, name)
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
            .serial_number(_random_serial()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
                           critical=True)
            .add_extension(ca_ski, critical=False)
            .sign(ca_key, hashes.SHA256())
        )

        def helper(cn: str, eku: x509.ObjectIdentifier, eku_critical: bool, *extra: x509.ExtensionType
                   ) -> tuple[PrivateKey, x509.Certificate]:
            key = generate_private_key("ec-p256")
            builder = (
                x509.CertificateBuilder()
                .subject_name(_name(cn, name)).issuer_name(ca_name).public_key(key.public_key())
                .serial_number(_random_serial()).not_valid_before(not_before).not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(key_usage(digital_signature=True), critical=True)
                .add_extension(x509.ExtendedKeyUsage([eku]), critical=eku_critical)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                               critical=False)
            )
            for ext in extra:
                builder = builder.add_extension(ext, critical=False)
            return key, builder.sign(ca_key, hashes.SHA256())

        # RFC 6960 4.2.2.2.1: id-pkix-ocsp-nocheck, so that clients do not ask about the responder itself
        ocsp_key, ocsp_cert = helper(f"{name} OCSP Responder", ExtendedKeyUsageOID.OCSP_SIGNING, False,
                                     x509.OCSPNoCheck())
        # RFC 3161 2.3: the TSA certificate has exactly one extKeyUsage, timeStamping, and it is critical
        tsa_key, tsa_cert = helper(f"{name} TSA", ExtendedKeyUsageOID.TIME_STAMPING, True)
        return cls(
            directory=None, name=name, ca_key=ca_key, ca_cert=ca_cert, ocsp_key=ocsp_key, ocsp_cert=ocsp_cert,
            tsa_key=tsa_key, tsa_cert=tsa_cert, ocsp_url=ocsp_url, records={},
        )

    @classmethod
    def init(cls, directory: str | Path, *, name: str, now: datetime, ocsp_url: str | None = None) -> DevCA:
        """Create a new CA and write it to ``directory`` (created if missing).

        Raises:
            PkiError: a CA already exists there.
            OSError: the files cannot be written.
        """
        d = Path(directory)
        if (d / "ca.pem").exists() or (d / "index.json").exists():
            raise PkiError(f"a development CA already exists in {d}",
                           hint="use it as it is, or remove the directory's generated files first")
        ca = cls.create(name=name, now=now, ocsp_url=ocsp_url)
        ca.directory = d
        private_dir(d)
        for stem, key, cert in (("ca", ca.ca_key, ca.ca_cert), ("ocsp", ca.ocsp_key, ca.ocsp_cert),
                                ("tsa", ca.tsa_key, ca.tsa_cert)):
            write_private_key(d / f"{stem}.key", key)
            write_public_file(d / f"{stem}.pem", cert_pem(cert).encode("ascii"))
        ca._save_index()
        return ca

    @classmethod
    def load(cls, directory: str | Path) -> DevCA:
        """Load a CA written by :meth:`init`.

        Raises:
            PkiError: the directory holds no CA, or a file is unreadable or malformed.
        """
        d = Path(directory)
        if not (d / "ca.pem").exists():
            raise PkiError(f"no development CA in {d}", hint="create one with: gateway pki init")
        certs: dict[str, x509.Certificate] = {}
        keys: dict[str, PrivateKey] = {}
        for stem in ("ca", "ocsp", "tsa"):
            try:
                certs[stem] = x509.load_pem_x509_certificate((d / f"{stem}.pem").read_bytes())
            except (OSError, ValueError) as e:
                raise PkiError(f"{d / f'{stem}.pem'} cannot be loaded: {e}") from e
            keys[stem] = read_private_key(d / f"{stem}.key")
        name_attrs = certs["ca"].subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ca = cls(
            directory=d, name=str(name_attrs[0].value) if name_attrs else "Development CA",
            ca_key=keys["ca"], ca_cert=certs["ca"], ocsp_key=keys["ocsp"], ocsp_cert=certs["ocsp"],
            tsa_key=keys["tsa"], tsa_cert=certs["tsa"], ocsp_url=None, records={},
        )
        ca._load_index()
        return ca

    # ---- the index ------------------------------------------------------------------------------

    def _index_path(self) -> Path:
        assert self.directory is not None
        return self.directory / "index.json"

    def _stamp(self) -> tuple[int, int, int]:
        st = os.stat(self._index_path())
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _load_index(self) -> None:
        path = self._index_path()
        try:
            stamp = self._stamp()
            data = json.loads(path.read_bytes())
            if data.get("format") != INDEX_FORMAT:
                raise PkiError(f"{path}: unknown index format {data.get('format')!r}")
            records = {r.serial: r for r in (CertRecord.from_json(c) for c in data["certs"])}
            self.ocsp_url = data.get("ocsp_url")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PkiError(f"{path} cannot be loaded: {e}") from e
        self._records = records
        self._index_stamp = stamp
        self._state_cache.clear()

    def _save_index(self) -> None:
        if self.directory is None:
            self._state_cache.clear()
            return
        data = {
            "format": INDEX_FORMAT, "name": self.name, "ocsp_url": self.ocsp_url,
            "certs": [r.to_json() for r in sorted(self._records.values(), key=lambda r: r.not_before)],
        }
        write_public_file(self._index_path(), json.dumps(data, indent=2).encode("utf-8") + b"\n")
        self._index_stamp = self._stamp()
        self._state_cache.clear()

    def refresh(self) -> bool:
        """Reload ``index.json`` if another process changed it; returns whether it did.

        Raises:
            PkiError: the changed index cannot be loaded.
        """
        if self.directory is None:
            return False
        try:
            stamp = self._stamp()
        except OSError as e:
            raise PkiError(f"{self._index_path()} cannot be read: {e}") from e
        if stamp == self._index_stamp:
            return False
        self._load_index()
        return True

    # ---- issuing and revoking ------------------------------------------------------------------

    def issue(
        self, csr: x509.CertificateSigningRequest | bytes | str, *, kind: CertKind,
        expected_identity: Identity, now: datetime, validity_days: int = 730, validity: timedelta | None = None,
    ) -> x509.Certificate:
        """Issue a certificate of ``kind`` for ``expected_identity`` from a CSR that asks for exactly that.

        ``validity`` (if given) replaces ``validity_days``: the ACME endpoint issues short-lived certificates.

        Raises:
            PkiError: the CSR is malformed or its signature does not verify, it names another identity or
                kind, its key type is not allowed, or ``validity_days`` is not positive.
            ValueError: ``now`` is naive.
        """
        now = _check_now(now)
        # (1) a CSR
        req = _load_csr(csr)
        # (2) its signature verifies: the requester holds the private key
        try:
            signature_ok = req.is_signature_valid
        except (ValueError, UnsupportedAlgorithm) as e:
            raise PkiError(f"CSR signature cannot be checked: {e}") from e
        if not signature_ok:
            raise PkiError("CSR signature does not verify (the request was altered or made with another key)")
        # (3) the kind asked for fits the identity the operator expects
        if kind_of_identity(expected_identity) != kind:
            raise PkiError(f"{a_kind(kind)} certificate cannot certify {expected_identity.typed()}")
        # (4) the CSR names exactly the identity the operator expects, and nothing else
        csr_kind, csr_ident = csr_identity(req)
        if csr_kind != kind or csr_ident != expected_identity:
            raise PkiError(
                f"CSR asks for {a_kind(csr_kind)} certificate of {csr_ident.typed()}, but the CA was asked "
                f"to certify {a_kind(kind)} certificate of {expected_identity.typed()}",
                hint="the CA issues only what it was asked to certify; check --identity and --kind",
            )
        # (5) an allowed key type
        public_key = req.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise PkiError(f"CSR key of type {type(public_key).__name__} is not allowed; use EC P-256 or RSA")
        key_type_of(public_key)
        lifetime = validity if validity is not None else timedelta(days=validity_days)
        if lifetime <= timedelta(0):
            shown = f"{validity_days} days" if validity is None else f"{lifetime.total_seconds():g} seconds"
            raise PkiError(f"validity of {shown} is not positive")
        # (6) the certificate: our subject and the profile's extensions, never the CSR's own
        orgs = req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        org = str(orgs[0].value) if orgs else None
        not_before = now - BACKDATE
        not_after = min(now + lifetime, self.ca_cert.not_valid_after_utc)
        ca_ski = self.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject_name(expected_identity, org)).issuer_name(self.ca_cert.subject)
            .public_key(public_key).serial_number(self._fresh_serial())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
        )
        for ext, critical in profile_extensions(kind, expected_identity, public_key):
            builder = builder.add_extension(ext, critical=critical)
        if self.ocsp_url:
            builder = builder.add_extension(x509.AuthorityInformationAccess([
                x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                       x509.UniformResourceIdentifier(self.ocsp_url)),
            ]), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        # (7) recorded in the index before it is handed out
        self._records[cert.serial_number] = CertRecord(
            serial=cert.serial_number, kind=kind, identity=str(expected_identity),
            subject=cert.subject.rfc4514_string(), not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc, sha256=cert_sha256_hex(cert), pem=cert_pem(cert),
        )
        self._save_index()
        return cert

    def _fresh_serial(self) -> int:
        taken = {self.ca_cert.serial_number, self.ocsp_cert.serial_number, self.tsa_cert.serial_number}
        while True:
            serial = _random_serial()
            if serial not in self._records and serial not in taken:
                return serial

    def revoke(
        self, serial: int, *, reason: x509.ReasonFlags | str = "unspecified", now: datetime
    ) -> CertRecord:
        """Revoke an issued certificate (revoking it again keeps the first time and reason).

        Raises:
            PkiError: this CA never issued ``serial``, or an unknown reason.
            ValueError: ``now`` is naive.
        """
        now = _check_now(now)
        flag = parse_reason(reason) if isinstance(reason, str) else reason
        record = self.status(serial)
        if record.status == "revoked":
            return record
        record = replace(record, status="revoked", revoked_at=now, reason=flag.value)
        self._records[serial] = record
        self._save_index()
        return record

    def status(self, serial: int) -> CertRecord:
        """The record of an issued certificate.

        Raises:
            PkiError: this CA never issued ``serial``.
        """
        record = self._records.get(serial)
        if record is None:
            raise PkiError(f"certificate {serial:X} was not issued by this CA")
        return record

    def list(self) -> list[CertRecord]:
        """Every issued certificate, oldest first."""
        return sorted(self._records.values(), key=lambda r: (r.not_before, r.serial))

    # ---- what the responders need --------------------------------------------------------------

    def ocsp_state(self, validity_seconds: int = 3600) -> OcspResponderState:
        """A snapshot for :func:`gateway.dev.pki.ocsp_responder.respond` (cached until the index changes)."""
        state = self._state_cache.get(validity_seconds)
        if state is None:
            revoked = {
                r.serial: Revocation(
                    revoked_at=r.revoked_at or r.not_before,
                    reason=parse_reason(r.reason) if r.reason else None,
                )
                for r in self._records.values() if r.status == "revoked"
            }
            state = OcspResponderState(
                issuer_cert=self.ca_cert, responder_cert=self.ocsp_cert, responder_key=self.ocsp_key,
                issued=frozenset(self._records), revoked=MappingProxyType(revoked),
                validity_seconds=validity_seconds,
            )
            self._state_cache[validity_seconds] = state
        return state

    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)
