"""The software token's state and rules: keys, certificates, PIN lockout, certificate choice (pure).

No files and no clock: :class:`TokenState` is a frozen value that :mod:`gateway.token.soft` reads from and
writes to ``token.json``; every rule here takes ``now`` and returns a new state or raises.

Rules (docs/tokens.md):

- **PIN lockout** (:class:`LockoutPolicy`, a table): the first ``free_attempts - 1`` consecutive wrong PINs
  cost nothing but the KDF; the ``free_attempts``-th and every later one lock the token for
  ``base_seconds * 2 ** (n - free_attempts)`` seconds (capped at ``max_seconds``), during which no PIN is
  even tried. A correct PIN resets the count. The state is persisted, so restarting does not reset it.
- **Certificate import** (:func:`check_import`): the certificate follows the profile, its public key is
  one of the token's keys, its kind is that key's usage, it names this server (auth) or one of the
  members this server signs for (sign), it was issued by a CA of the global configuration, it has not
  expired, and it is not in the token already.
- **Which certificate is used** (:func:`select_cert`): among the *active* certificates of a usage that are
  valid now (and, for authentication, registered in the global configuration when any is), the one with
  the latest ``notBefore`` (then the latest import). So renewal is: import the new certificate, activate
  it (it takes over), deactivate the old one.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.errors import (
    CertExists,
    CertExpired,
    CertIdUnclear,
    CertNotFound,
    GatewayError,
    KeyIdUnclear,
    KeyNotFound,
    NoKeyForCert,
    PinFormat,
    PinIncorrect,
    PkiError,
    RequestError,
    TokenLocked,
    UntrustedSignerCert,
    WrongCertUsage,
    WrongIdentity,
)
from gateway.identifiers import MemberId, SecurityServerId
from gateway.trust import certprofile, keys
from gateway.trust.certprofile import CertKind

FORMAT = 1  # token.json format version
MIN_PIN_LENGTH = 8  # characters; with Argon2id this keeps an offline guess per PIN expensive
MAX_PIN_LENGTH = 1024  # characters; bounds KDF input
MAX_LABEL_LENGTH = 255  # characters

CertState = Literal["active", "inactive"]
# A key's usage: certificates of a kind, or "witness": the Ed25519 key a witness cosigns with (no certificate;
# docs/witness.md section 2)
KeyUsage = Literal["auth", "sign", "witness"]
KEY_USAGES: tuple[KeyUsage, ...] = ("auth", "sign", "witness")
TokenKeyType = Literal["ec-p256", "rsa-2048", "rsa-3072", "ed25519"]  # keys.KeyType, and a witness key's type
OcspState = Literal["good", "revoked", "unknown", "unavailable", "not-checked"]


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def spki_sha256(
    key: keys.PrivateKey | keys.PublicKey | x509.Certificate | ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey,
) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo: the id of a token key, and how a certificate finds its key."""
    pub = (key if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey)
           else key.public_key())
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True, kw_only=True)
class KdfParams:
    """Argon2id parameters (RFC 9106) that turn the PIN into the keys' encryption passphrase.

    The defaults are RFC 9106's second recommended option (t=3, m=64 MiB, p=4). Tests use smaller ones.
    """

    salt: bytes  # 16 random bytes per token
    time_cost: int = 3  # passes; RFC 9106 section 4
    memory_kib: int = 64 * 1024  # KiB; RFC 9106 section 4 (64 MiB)
    parallelism: int = 4  # lanes; RFC 9106 section 4

    def to_dict(self) -> dict[str, Any]:
        return {
            "alg": "argon2id", "salt": base64.b64encode(self.salt).decode("ascii"),
            "time_cost": self.time_cost, "memory_kib": self.memory_kib, "parallelism": self.parallelism,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KdfParams:
        if d.get("alg") != "argon2id":
            raise PkiError(f"token KDF {d.get('alg')!r} is not supported (argon2id is)")
        return cls(salt=base64.b64decode(d["salt"]), time_cost=int(d["time_cost"]),
                   memory_kib=int(d["memory_kib"]), parallelism=int(d["parallelism"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class LockoutPolicy:
    """Back-off after wrong PINs (see the module docstring)."""

    free_attempts: int = 3  # consecutive wrong PINs before the first lock
    base_seconds: int = 30  # seconds; the first lock
    max_seconds: int = 3600  # seconds; locks never grow beyond this

    def delay(self, failures: int) -> timedelta:
        """How long the token stays locked after the ``failures``-th consecutive wrong PIN."""
        if failures < self.free_attempts:
            return timedelta(0)
        exponent = min(failures - self.free_attempts, 30)
        return timedelta(seconds=min(self.base_seconds * 2**exponent, self.max_seconds))


@dataclass(frozen=True, slots=True, kw_only=True)
class Lockout:
    failures: int = 0  # consecutive wrong PINs
    locked_until: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"failures": self.failures,
                "locked_until": None if self.locked_until is None else _time(self.locked_until)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Lockout:
        until = d.get("locked_until")
        return cls(failures=int(d.get("failures", 0)), locked_until=None if until is None else _parse_time(until))


@dataclass(frozen=True, slots=True, kw_only=True)
class CertEntry:
    """A certificate imported for one of the token's keys."""

    sha256: str  # hex SHA-256 of the DER certificate (the fingerprint the global configuration uses)
    pem: str
    kind: CertKind
    identity: str  # the server (auth) or member (sign) it names
    not_before: datetime
    not_after: datetime
    state: CertState
    imported_at: datetime

    @property
    def certificate(self) -> x509.Certificate:
        return keys.load_certificate(self.pem.encode("ascii"))

    @property
    def active(self) -> bool:
        return self.state == "active"

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256, "pem": self.pem, "kind": self.kind, "identity": self.identity,
            "not_before": _time(self.not_before), "not_after": _time(self.not_after), "state": self.state,
            "imported_at": _time(self.imported_at),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CertEntry:
        return cls(
            sha256=d["sha256"], pem=d["pem"], kind=d["kind"], identity=d["identity"],
            not_before=_parse_time(d["not_before"]), not_after=_parse_time(d["not_after"]), state=d["state"],
            imported_at=_parse_time(d["imported_at"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyEntry:
    """A private key of the token (the key itself is in ``keys/<id>.pem``, encrypted)."""

    id: str  # hex SHA-256 of the public key (SubjectPublicKeyInfo DER)
    usage: KeyUsage
    key_type: TokenKeyType
    label: str
    created_at: datetime
    certs: tuple[CertEntry, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "usage": self.usage, "key_type": self.key_type, "label": self.label,
            "created_at": _time(self.created_at), "certs": [c.to_dict() for c in self.certs],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KeyEntry:
        return cls(
            id=d["id"], usage=d["usage"], key_type=d["key_type"], label=d["label"],
            created_at=_parse_time(d["created_at"]), certs=tuple(CertEntry.from_dict(c) for c in d["certs"]),
        )


def cert_kind(entry: KeyEntry) -> CertKind:
    """The certificate kind of a key's usage.

    Raises:
        PkiError: a witness key, which has no certificate (docs/witness.md section 2).
    """
    if entry.usage == "witness":
        raise PkiError(f"key {entry.id[:16]}... is the witness key: it has no certificates (nor CSRs)")
    return entry.usage


def certified_key_type(entry: KeyEntry) -> keys.KeyType:
    """The key type of a key that certificates are issued for.

    Raises:
        PkiError: an Ed25519 (witness) key.
    """
    if entry.key_type == "ed25519":
        raise PkiError(f"key {entry.id[:16]}... is an Ed25519 witness key, not a certificate key")
    return entry.key_type


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenState:
    """Everything in ``token.json``."""

    kdf: KdfParams
    verifier: str  # hex SHA-256("gateway-token-pin-check" || derived passphrase): tells a wrong PIN
    lockout: Lockout = field(default_factory=Lockout)
    keys: tuple[KeyEntry, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "kdf": self.kdf.to_dict(), "verifier": self.verifier,
                "lockout": self.lockout.to_dict(), "keys": [k.to_dict() for k in self.keys]}

    @classmethod
    def from_dict(cls, d: Any) -> TokenState:
        """Raises: PkiError: not a token state this version understands."""
        try:
            if d["format"] != FORMAT:
                raise PkiError(f"token format {d['format']!r} is not supported (this version reads {FORMAT})")
            return cls(kdf=KdfParams.from_dict(d["kdf"]), verifier=d["verifier"],
                       lockout=Lockout.from_dict(d["lockout"]), keys=tuple(KeyEntry.from_dict(k) for k in d["keys"]))
        except (KeyError, TypeError, ValueError) as e:
            raise PkiError(f"token state is malformed: {type(e).__name__}: {e}") from e

    def key(self, key_id: str) -> KeyEntry:
        """The key with this id, or a unique prefix of at least 8 hex digits.

        Raises:
            RequestError: 404 if there is no such key, 400 if the prefix is ambiguous or too short.
        """
        key_id = key_id.lower()
        exact = [k for k in self.keys if k.id == key_id]
        if exact:
            return exact[0]
        if len(key_id) < 8:
            raise KeyIdUnclear(f"key id {key_id!r} is too short; give at least 8 hex digits")
        hits = [k for k in self.keys if k.id.startswith(key_id)]
        if len(hits) > 1:
            raise KeyIdUnclear(f"key id prefix {key_id!r} matches {len(hits)} keys")
        if not hits:
            raise KeyNotFound(f"no key {key_id!r} in the token")
        return hits[0]

    def cert(self, sha256: str) -> tuple[KeyEntry, CertEntry]:
        """The certificate with this fingerprint (or a unique prefix of at least 8 hex digits) and its key.

        Raises:
            RequestError: 404 if there is no such certificate, 400 if the prefix is ambiguous or too short.
        """
        sha256 = sha256.lower()
        hits = [(k, c) for k in self.keys for c in k.certs if c.sha256 == sha256]
        if not hits:
            if len(sha256) < 8:
                raise CertIdUnclear(f"certificate {sha256!r}: give at least 8 hex digits of the fingerprint")
            hits = [(k, c) for k in self.keys for c in k.certs if c.sha256.startswith(sha256)]
        if len(hits) > 1:
            raise CertIdUnclear(f"fingerprint prefix {sha256!r} matches {len(hits)} certificates")
        if not hits:
            raise CertNotFound(f"no certificate {sha256!r} in the token")
        return hits[0]

    def replace_key(self, entry: KeyEntry) -> TokenState:
        return dataclasses.replace(self, keys=tuple(entry if k.id == entry.id else k for k in self.keys))


# ---------------------------------------------------------------------------------------------------------
# PIN


def check_pin_format(pin: str) -> str:
    """Raises: RequestError: the PIN is too short, too long or holds control characters."""
    if len(pin) < MIN_PIN_LENGTH:
        raise PinFormat(f"the PIN must have at least {MIN_PIN_LENGTH} characters")
    if len(pin) > MAX_PIN_LENGTH:
        raise PinFormat(f"the PIN must have at most {MAX_PIN_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in pin):
        raise PinFormat("the PIN holds a control character")
    return pin


def pin_verifier(passphrase: bytes) -> str:
    return hashlib.sha256(b"gateway-token-pin-check\x00" + passphrase).hexdigest()


def check_not_locked(lockout: Lockout, now: datetime) -> None:
    """Raises: RequestError: 423 ``Signer.TokenLocked`` while a lock from wrong PINs lasts."""
    if lockout.locked_until is not None and now < lockout.locked_until:
        wait = int((lockout.locked_until - now).total_seconds()) + 1
        raise TokenLocked(
            f"the token is locked after {lockout.failures} wrong PINs; try again in {wait} s "
            f"(at {_time(lockout.locked_until)})",
        )


def after_wrong_pin(lockout: Lockout, policy: LockoutPolicy, now: datetime) -> Lockout:
    """The lockout state after one more wrong PIN."""
    failures = lockout.failures + 1
    delay = policy.delay(failures)
    return Lockout(failures=failures, locked_until=now + delay if delay else None)


def wrong_pin_error(lockout: Lockout, policy: LockoutPolicy) -> RequestError:
    if lockout.locked_until is not None:
        tail = f"the token is locked until {_time(lockout.locked_until)}"
    else:
        left = policy.free_attempts - lockout.failures
        tail = f"{left} more wrong PIN{'s' if left != 1 else ''} lock the token"
    return PinIncorrect(f"the PIN is incorrect ({lockout.failures} in a row; {tail})")


# ---------------------------------------------------------------------------------------------------------
# Keys and certificates


def check_label(label: str) -> str:
    """Raises: RequestError: too long or holding control characters."""
    if len(label) > MAX_LABEL_LENGTH:
        raise RequestError(f"key label has {len(label)} characters; at most {MAX_LABEL_LENGTH} are allowed")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in label):
        raise RequestError("key label holds a control character")
    return label


def ca_finder(cas: Iterable[x509.Certificate]) -> Callable[[x509.Certificate], x509.Certificate | None]:
    """A ``ca_for`` over a list of CA certificates: the one that directly issued a certificate (issuer name
    and signature both checked), as :meth:`~gateway.globalconf.model.GlobalConf.ca_for` does."""
    known = list(cas)

    def ca_for(cert: x509.Certificate) -> x509.Certificate | None:
        for ca in known:
            if ca.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return ca
        return None

    return ca_for


def check_import(
    state: TokenState,
    cert: x509.Certificate,
    *,
    server_id: SecurityServerId,
    members: Collection[MemberId],
    ca_for: Callable[[x509.Certificate], object | None],
    now: datetime,
) -> tuple[KeyEntry, CertEntry]:
    """Check a certificate before it is imported; return its key and the new (inactive) entry.

    ``members`` are the members this server may sign for (at least its owner); ``ca_for`` is the global
    configuration's :meth:`~gateway.globalconf.model.GlobalConf.ca_for`.

    Raises:
        TrustError: the certificate does not follow the profile, or no trusted CA issued it.
        PkiError: it matches no key of the token, or a key of the other usage, names another server or a
            member this server does not sign for, has expired, or is in the token already.
    """
    fingerprint = keys.cert_sha256_hex(cert)
    # (1) the profile: kind and identity
    kind, identity = certprofile.identity_of(cert)
    # (2) the key: the certificate's public key is one of ours, of the same usage
    key_id = spki_sha256(cert)
    key = next((k for k in state.keys if k.id == key_id), None)
    if key is None:
        raise NoKeyForCert(f"certificate {fingerprint[:16]}... does not match any key of the token "
                           "(it was not issued for a CSR of this token)")
    if key.usage != kind:
        raise WrongCertUsage(f"certificate {fingerprint[:16]}... is {certprofile.a_kind(kind)} certificate, but "
                             f"key {key.id[:16]}... is for {key.usage} certificates")
    # (3) the identity: this server, or a member it signs for
    if kind == "auth" and identity != server_id:
        raise WrongIdentity(f"authentication certificate names {identity.typed()}, not this server {server_id}")
    if kind == "sign" and identity not in members:
        allowed = ", ".join(sorted(str(m) for m in members))
        raise WrongIdentity(f"signing certificate names {identity.typed()}; this server signs for {allowed}")
    # (4) issued by a CA of the global configuration
    if ca_for(cert) is None:
        raise UntrustedSignerCert(f"certificate {fingerprint[:16]}... is not issued by a CA trusted in the "
                                  "global configuration")
    # (5) not expired, not a duplicate
    if cert.not_valid_after_utc <= now:
        raise CertExpired(f"certificate {fingerprint[:16]}... expired at {_time(cert.not_valid_after_utc)}")
    if any(c.sha256 == fingerprint for k in state.keys for c in k.certs):
        raise CertExists(f"certificate {fingerprint[:16]}... is in the token already")
    entry = CertEntry(
        sha256=fingerprint, pem=keys.cert_pem(cert), kind=kind, identity=str(identity),
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc, state="inactive",
        imported_at=now,
    )
    return key, entry


def set_cert_state(state: TokenState, sha256: str, new: CertState) -> tuple[TokenState, CertEntry]:
    """Activate or deactivate a certificate.

    Raises:
        RequestError: 404 if the token has no such certificate.
    """
    key, cert = state.cert(sha256)
    updated = dataclasses.replace(cert, state=new)
    key = dataclasses.replace(key, certs=tuple(updated if c.sha256 == cert.sha256 else c for c in key.certs))
    return state.replace_key(key), updated


def select_cert(
    state: TokenState, usage: CertKind, *, now: datetime, registered: Collection[str] | None = None,
) -> tuple[KeyEntry, CertEntry] | None:
    """The certificate (and key) to use for ``usage`` now, or None (rule in the module docstring).

    ``registered``: for ``auth``, the fingerprints the global configuration registers for this server.
    """
    candidates = [
        (k, c) for k in state.keys if k.usage == usage for c in k.certs
        if c.active and c.not_before <= now < c.not_after
    ]
    if usage == "auth" and registered is not None:
        known = [(k, c) for k, c in candidates if c.sha256 in registered]
        candidates = known or candidates
    if not candidates:
        return None
    return max(candidates, key=lambda kc: (kc[1].not_before, kc[1].imported_at))


# ---------------------------------------------------------------------------------------------------------
# Reports


@dataclass(frozen=True, slots=True, kw_only=True)
class CertReport:
    """One line of ``gateway token keys`` / the admin API's certificate list."""

    key_id: str
    usage: KeyUsage
    key_type: TokenKeyType
    label: str
    sha256: str | None  # None: a key without certificate (CSR pending)
    identity: str | None
    state: CertState | None
    not_after: datetime | None
    days_left: float | None
    in_use: bool
    ocsp: OcspState

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id, "usage": self.usage, "key_type": self.key_type, "label": self.label,
            "sha256": self.sha256, "identity": self.identity, "state": self.state,
            "not_after": None if self.not_after is None else _time(self.not_after),
            "days_left": None if self.days_left is None else round(self.days_left, 2),
            "in_use": self.in_use, "ocsp": self.ocsp,
        }


def report(
    state: TokenState, *, now: datetime, ocsp: Mapping[str, OcspState] | None = None,
    registered: Collection[str] | None = None,
) -> list[CertReport]:
    """Every key with each of its certificates: expiry, days left, whether in use, OCSP status.

    ``ocsp`` maps fingerprints to a status the caller fetched; missing ones are ``not-checked``.
    """
    in_use = set()
    for usage in certprofile.CERT_KINDS:
        chosen = select_cert(state, usage, now=now, registered=registered)
        if chosen is not None:
            in_use.add(chosen[1].sha256)
    out = []
    for k in state.keys:
        if not k.certs:
            out.append(CertReport(key_id=k.id, usage=k.usage, key_type=k.key_type, label=k.label, sha256=None,
                                  identity=None, state=None, not_after=None, days_left=None, in_use=False,
                                  ocsp="not-checked"))
        for c in k.certs:
            out.append(CertReport(
                key_id=k.id, usage=k.usage, key_type=k.key_type, label=k.label, sha256=c.sha256,
                identity=c.identity, state=c.state, not_after=c.not_after,
                days_left=(c.not_after - now).total_seconds() / 86400, in_use=c.sha256 in in_use,
                ocsp=(ocsp or {}).get(c.sha256, "not-checked"),
            ))
    return out


def expiring(reports: Iterable[CertReport], *, within_days: float) -> list[CertReport]:
    """Active certificates that expire within ``within_days`` (or have expired)."""
    return [r for r in reports if r.state == "active" and r.days_left is not None and r.days_left <= within_days]


def describe_error(e: BaseException) -> str:
    return e.message if isinstance(e, GatewayError) else f"{type(e).__name__}: {e}"


def file_report(
    certs: Iterable[x509.Certificate], *, now: datetime, ocsp: Mapping[str, OcspState] | None = None,
) -> list[CertReport]:
    """The same report for a server that keeps plain key files (each certificate in use, no key ids)."""
    out = []
    for cert in certs:
        kind, identity = certprofile.identity_of(cert)
        fingerprint = keys.cert_sha256_hex(cert)
        out.append(CertReport(
            key_id=spki_sha256(cert), usage=kind, key_type=keys.key_type_of(keys.public_key_of(cert)), label="file",
            sha256=fingerprint, identity=str(identity), state="active", not_after=cert.not_valid_after_utc,
            days_left=(cert.not_valid_after_utc - now).total_seconds() / 86400, in_use=True,
            ocsp=(ocsp or {}).get(fingerprint, "not-checked"),
        ))
    return out
