"""The software token: a directory of PIN-encrypted PKCS#8 keys and their certificates (I/O).

Layout of the token directory (docs/tokens.md)::

    token.json          state: KDF parameters, PIN verifier, lockout, keys and certificates (0600)
    keys/<key id>.pem   PKCS#8 private keys, encrypted (0600)
    certs/<sha256>.pem  imported certificates (0644; the TLS stack reads them from here)
    .lock               flock(2) target: one read-modify-write at a time, across processes

The PIN never encrypts anything directly: Argon2id (RFC 9106; memory-hard, parameters in ``token.json``)
turns it into a 256-bit passphrase, and that passphrase encrypts each key as standard PKCS#8 (PBES2,
AES-256-CBC) that OpenSSL reads too, so the TLS stack loads the authentication key with
``SSLContext.load_cert_chain(password=...)`` and no decrypted key ever touches the disk. Guessing the PIN
offline costs one Argon2id evaluation per guess; online, the lockout of :mod:`gateway.token.model` applies.

Every method that touches files or runs the KDF does so in a worker thread, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import fcntl
import hmac
import json
import os
import secrets
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from argon2.low_level import Type, hash_secret_raw
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.errors import ConfigError, KeyInUse, PkiError, RequestError, TokenNotActive
from gateway.files import private_dir
from gateway.identifiers import MemberId, SecurityServerId
from gateway.protocol.signatures import KeySigner
from gateway.token import model
from gateway.token.model import CertEntry, KdfParams, KeyEntry, LockoutPolicy, TokenState
from gateway.trust import certprofile, keys
from gateway.trust.certprofile import CertKind

MAX_STATE_BYTES = 4 * 2**20  # bytes; token.json is a few KiB per key

_T = TypeVar("_T")


def derive_passphrase(pin: str, kdf: KdfParams) -> bytes:
    """Argon2id(PIN, salt) as 64 hex characters: the PKCS#8 passphrase of every key of the token (CPU-bound)."""
    raw = hash_secret_raw(
        pin.encode("utf-8"), kdf.salt, time_cost=kdf.time_cost, memory_cost=kdf.memory_kib,
        parallelism=kdf.parallelism, hash_len=32, type=Type.ID,
    )
    return raw.hex().encode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsMaterial:
    """What :meth:`ssl.SSLContext.load_cert_chain` needs for our authentication certificate."""

    cert_path: Path
    key_path: Path  # encrypted PKCS#8
    password: bytes
    cert: x509.Certificate
    sha256: str


def not_logged_in() -> RequestError:
    return TokenNotActive("the token is not logged in; log in with its PIN first")


class SoftToken:
    """A software token in ``directory``. Log in with :meth:`login` before key operations.

    Raises (every method): ConfigError when the directory is not a token or cannot be read or written.
    """

    def __init__(self, directory: str | Path, *, policy: LockoutPolicy | None = None) -> None:
        self.dir = Path(directory)
        self.policy = policy or LockoutPolicy()
        self._passphrase: bytes | None = None

    # ---- files ------------------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.dir / "token.json"

    def key_path(self, key_id: str) -> Path:
        return self.dir / "keys" / f"{key_id}.pem"

    def cert_path(self, sha256: str) -> Path:
        return self.dir / "certs" / f"{sha256}.pem"

    def exists(self) -> bool:
        return self.state_path.is_file()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise ConfigError(f"token directory {self.dir} cannot be used: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read(self) -> TokenState:
        try:
            with self.state_path.open("rb") as f:
                data = f.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError as e:
            raise ConfigError(f"{self.dir} is not a token (no token.json)",
                              hint="create one with `gateway token init`") from e
        except OSError as e:
            raise ConfigError(f"token state {self.state_path} cannot be read: {e.strerror or e}") from e
        if len(data) > MAX_STATE_BYTES:
            raise ConfigError(f"token state {self.state_path} is larger than {MAX_STATE_BYTES} bytes")
        try:
            return TokenState.from_dict(json.loads(data))
        except (ValueError, PkiError) as e:
            raise ConfigError(f"token state {self.state_path} is unusable: {model.describe_error(e)}") from e

    def _write(self, state: TokenState) -> None:
        data = json.dumps(state.to_dict(), indent=1, sort_keys=True).encode("utf-8")
        keys._write_atomic(self.state_path, data, 0o600)

    def _update(self, change: Callable[[TokenState], tuple[TokenState, _T]]) -> _T:
        with self._locked():
            state, result = change(self._read())
            self._write(state)
            return result

    async def _thread(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.to_thread(fn)

    # ---- life cycle and PIN -----------------------------------------------------------------------------

    @classmethod
    async def init(cls, directory: str | Path, pin: str, *, kdf: KdfParams | None = None,
                   policy: LockoutPolicy | None = None) -> SoftToken:
        """Create an empty token protected by ``pin`` (it is logged in afterwards).

        Raises:
            RequestError: the PIN does not meet the rules (``Signer.PinFormat``).
            ConfigError: the directory holds a token already, or cannot be written.
        """
        model.check_pin_format(pin)
        token = cls(directory, policy=policy)
        params = kdf or KdfParams(salt=secrets.token_bytes(16))

        def create() -> bytes:
            try:
                private_dir(token.dir)
                (token.dir / "keys").mkdir(exist_ok=True, mode=0o700)
                (token.dir / "certs").mkdir(exist_ok=True, mode=0o755)
            except OSError as e:
                raise ConfigError(f"token directory {token.dir} cannot be created: {e.strerror or e}") from e
            with token._locked():
                if token.exists():
                    raise ConfigError(f"{token.dir} holds a token already")
                passphrase = derive_passphrase(pin, params)
                token._write(TokenState(kdf=params, verifier=model.pin_verifier(passphrase)))
            return passphrase

        token._passphrase = await token._thread(create)
        return token

    @property
    def logged_in(self) -> bool:
        return self._passphrase is not None

    async def state(self) -> TokenState:
        """The current state (keys, certificates, lockout) as on disk."""
        return await self._thread(self._read)

    async def login(self, pin: str, *, now: datetime) -> None:
        """Check the PIN and keep the derived passphrase in memory until :meth:`logout`.

        Raises:
            RequestError: 423 ``Signer.TokenLocked`` while locked (the PIN is not even tried); 401
                ``Signer.PinIncorrect`` for a wrong PIN (recorded; enough of them lock the token).
        """

        def attempt() -> bytes:
            with self._locked():
                state = self._read()
                # (1) a lock from earlier wrong PINs holds, whatever PIN is given now
                model.check_not_locked(state.lockout, now)
                # (2) the KDF, then the verifier (constant-time comparison)
                passphrase = derive_passphrase(pin, state.kdf)
                if not hmac.compare_digest(model.pin_verifier(passphrase), state.verifier):
                    # (3) a wrong PIN is counted and persisted before we answer
                    lockout = model.after_wrong_pin(state.lockout, self.policy, now)
                    self._write(dataclasses.replace(state, lockout=lockout))
                    raise model.wrong_pin_error(lockout, self.policy)
                # (4) success resets the count
                if state.lockout != model.Lockout():
                    self._write(dataclasses.replace(state, lockout=model.Lockout()))
                return passphrase

        self._passphrase = await self._thread(attempt)

    def logout(self) -> None:
        """Forget the passphrase; keys already handed out (a running signer) stay usable by their holder."""
        self._passphrase = None

    def _require_login(self) -> bytes:
        if self._passphrase is None:
            raise not_logged_in()
        return self._passphrase

    async def change_pin(self, old: str, new: str, *, now: datetime) -> None:
        """Re-encrypt every key under a new PIN (with a fresh salt).

        Raises:
            RequestError: as :meth:`login` for ``old``; ``Signer.PinFormat`` for ``new``.
        """
        model.check_pin_format(new)
        await self.login(old, now=now)
        old_pass = self._require_login()

        def change() -> bytes:
            with self._locked():
                state = self._read()
                params = dataclasses.replace(state.kdf, salt=secrets.token_bytes(16))
                new_pass = derive_passphrase(new, params)
                for k in state.keys:
                    if k.usage == "witness":
                        witness = _read_ed25519(self.key_path(k.id), old_pass)
                        keys._write_atomic(self.key_path(k.id), _ed25519_pem(witness, new_pass), 0o600)
                        continue
                    key = keys.read_private_key(self.key_path(k.id), old_pass)
                    keys.write_private_key(self.key_path(k.id), key, new_pass)
                self._write(dataclasses.replace(state, kdf=params, verifier=model.pin_verifier(new_pass)))
                return new_pass

        self._passphrase = await self._thread(change)

    # ---- keys -------------------------------------------------------------------------------------------

    async def generate_key(
        self, usage: CertKind, *, key_type: keys.KeyType = "ec-p256", label: str = "", now: datetime,
    ) -> KeyEntry:
        """Generate a key for ``auth`` or ``sign`` certificates (ECDSA P-256 by default, RSA 2048/3072).

        Raises:
            RequestError: not logged in, an unknown usage, or a bad label.
            PkiError: an unknown key type.
        """
        passphrase = self._require_login()
        if usage not in certprofile.CERT_KINDS:
            raise RequestError(f"key usage {usage!r} is not one of {', '.join(certprofile.CERT_KINDS)}")
        model.check_label(label)

        def gen() -> KeyEntry:
            key = keys.generate_private_key(key_type)
            entry = KeyEntry(id=model.spki_sha256(key), usage=usage, key_type=key_type, label=label, created_at=now)
            keys.write_private_key(self.key_path(entry.id), key, passphrase)

            def add(state: TokenState) -> tuple[TokenState, KeyEntry]:
                return dataclasses.replace(state, keys=(*state.keys, entry)), entry

            return self._update(add)

        return await self._thread(gen)

    async def generate_witness_key(self, *, label: str = "", now: datetime) -> KeyEntry:
        """Generate the witness's Ed25519 key (usage ``witness``, no certificate; docs/witness.md section 2).

        A token holds at most one witness key: a witness's key is its identity in every witness policy, so
        replacing it is deleting the old one first (and republishing the policies).

        Raises:
            RequestError: not logged in, a bad label, or a witness key exists already (409).
        """
        passphrase = self._require_login()
        model.check_label(label)

        def gen() -> KeyEntry:
            key = ed25519.Ed25519PrivateKey.generate()
            entry = KeyEntry(id=model.spki_sha256(key), usage="witness", key_type="ed25519", label=label,
                             created_at=now)

            def add(state: TokenState) -> tuple[TokenState, KeyEntry]:
                old = next((k for k in state.keys if k.usage == "witness"), None)
                if old is not None:
                    raise KeyInUse(f"the token has a witness key already ({old.id[:16]}...); delete it first")
                keys._write_atomic(self.key_path(entry.id), _ed25519_pem(key, passphrase), 0o600)
                return dataclasses.replace(state, keys=(*state.keys, entry)), entry

            return self._update(add)

        return await self._thread(gen)

    async def witness_private_key(self) -> ed25519.Ed25519PrivateKey | None:
        """The witness key (decrypted, for the running witness's signer), or None when the token has none.

        Raises:
            RequestError: not logged in.
            PkiError: the key file cannot be read or decrypted.
        """
        passphrase = self._require_login()
        state = await self.state()
        entry = next((k for k in state.keys if k.usage == "witness"), None)
        if entry is None:
            return None
        return await self._thread(lambda: _read_ed25519(self.key_path(entry.id), passphrase))

    async def private_key(self, key_id: str) -> keys.PrivateKey:
        """Decrypt one key (kept by the caller only as long as it needs it).

        Raises:
            RequestError: not logged in; 404 for an unknown key.
            PkiError: the key file cannot be read or decrypted, or it is the witness key
                (:meth:`witness_private_key`).
        """
        passphrase = self._require_login()
        state = await self.state()
        entry = state.key(key_id)
        model.certified_key_type(entry)
        return await self._thread(lambda: keys.read_private_key(self.key_path(entry.id), passphrase))

    async def delete_key(self, key_id: str) -> KeyEntry:
        """Delete a key with its certificates (refused while one of its certificates is active).

        Raises:
            RequestError: 404 for an unknown key; 409 while a certificate of it is active.
        """

        def delete() -> KeyEntry:
            def change(state: TokenState) -> tuple[TokenState, KeyEntry]:
                entry = state.key(key_id)
                if any(c.active for c in entry.certs):
                    raise KeyInUse(f"key {entry.id[:16]}... has an active certificate; deactivate it first")
                return dataclasses.replace(state, keys=tuple(k for k in state.keys if k.id != entry.id)), entry

            entry = self._update(change)
            for path in (self.key_path(entry.id), *(self.cert_path(c.sha256) for c in entry.certs)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            return entry

        return await self._thread(delete)

    async def csr(
        self, key_id: str, *, server_id: SecurityServerId, member: MemberId | None = None,
        name: str | None = None,
    ) -> x509.CertificateSigningRequest:
        """A CSR for a key: an ``auth`` key certifies ``server_id``; a ``sign`` key ``member`` (default: the
        server's owner). The identity comes from the server's settings, never from the operator's typing.

        Raises:
            RequestError: not logged in; 404 for an unknown key.
            PkiError: a bad organisation name, or an unreadable key.
        """
        state = await self.state()
        entry = state.key(key_id)
        kind = model.cert_kind(entry)
        key = await self.private_key(entry.id)
        identity: certprofile.Identity = server_id if kind == "auth" else (member or server_id.owner)
        return certprofile.build_csr(key, identity, kind=kind, name=name)

    # ---- certificates -----------------------------------------------------------------------------------

    async def import_cert(
        self, data: bytes, *, server_id: SecurityServerId, ca_for: Callable[[x509.Certificate], object | None],
        members: Collection[MemberId] = (), now: datetime,
    ) -> CertEntry:
        """Import a certificate (PEM or DER) issued for one of the token's keys; it starts inactive.

        ``ca_for``: the global configuration's ``GlobalConf.ca_for`` (or ``model.ca_finder(cas)``);
        ``members``: members besides the server's owner that this server signs for.

        Raises:
            TrustError: not a certificate, not following the profile, or not issued by a trusted CA.
            PkiError: as :func:`gateway.token.model.check_import`.
        """
        cert = keys.load_certificate(data)
        allowed = {server_id.owner, *members}

        def do() -> CertEntry:
            def change(state: TokenState) -> tuple[TokenState, CertEntry]:
                key, entry = model.check_import(state, cert, server_id=server_id, members=allowed,
                                                ca_for=ca_for, now=now)
                keys.write_public_file(self.cert_path(entry.sha256), entry.pem.encode("ascii"))
                return state.replace_key(dataclasses.replace(key, certs=(*key.certs, entry))), entry

            return self._update(change)

        return await self._thread(do)

    async def activate(self, sha256: str) -> CertEntry:
        """Mark a certificate active (the running server switches to it; see ``select_cert``).

        Raises:
            RequestError: 404 for an unknown certificate.
        """
        return await self._thread(lambda: self._update(lambda s: model.set_cert_state(s, sha256, "active")))

    async def deactivate(self, sha256: str) -> CertEntry:
        """Mark a certificate inactive (retired: no longer used for signing or TLS).

        Raises:
            RequestError: 404 for an unknown certificate.
        """
        return await self._thread(lambda: self._update(lambda s: model.set_cert_state(s, sha256, "inactive")))

    # ---- what the security server uses ------------------------------------------------------------------

    async def signer(self, *, now: datetime) -> KeySigner:
        """A :class:`~gateway.protocol.signatures.Signer` over the signing certificate in use now and its key.

        Raises:
            RequestError: not logged in.
            ConfigError: no active, valid signing certificate.
        """
        self._require_login()
        state = await self.state()
        chosen = model.select_cert(state, "sign", now=now)
        if chosen is None:
            raise ConfigError(f"token {self.dir} has no active signing certificate valid now",
                              hint="import one and `gateway token activate` it")
        key_entry, cert_entry = chosen
        return KeySigner(key=await self.private_key(key_entry.id), cert=cert_entry.certificate)

    async def tls_material(self, *, now: datetime, registered: Collection[str] | None = None) -> TlsMaterial:
        """The authentication certificate in use now, as files plus the key's passphrase.

        Raises:
            RequestError: not logged in.
            ConfigError: no active, valid authentication certificate.
        """
        password = self._require_login()
        state = await self.state()
        chosen = model.select_cert(state, "auth", now=now, registered=registered)
        if chosen is None:
            raise ConfigError(f"token {self.dir} has no active authentication certificate valid now",
                              hint="import one and `gateway token activate` it")
        key_entry, cert_entry = chosen
        return TlsMaterial(cert_path=self.cert_path(cert_entry.sha256), key_path=self.key_path(key_entry.id),
                           password=password, cert=cert_entry.certificate, sha256=cert_entry.sha256)

    async def report(
        self, *, now: datetime, ocsp: dict[str, model.OcspState] | None = None,
        registered: Collection[str] | None = None,
    ) -> list[model.CertReport]:
        """Every key and certificate with expiry, days left, use and OCSP status (see ``model.report``)."""
        return model.report(await self.state(), now=now, ocsp=ocsp, registered=registered)


def _ed25519_pem(key: ed25519.Ed25519PrivateKey, passphrase: bytes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(passphrase))


def _read_ed25519(path: Path, passphrase: bytes) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    except (OSError, ValueError, TypeError) as e:
        raise PkiError(f"witness key {path} cannot be read or decrypted: {e}") from e
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise PkiError(f"witness key {path} is not an Ed25519 key")
    return key


def read_pin(
    *, pin_file: str = "", pin_env: str = "", environ: dict[str, str] | None = None, setting: str = "token_pin",
) -> str:
    """The token PIN from a file (first line; the file must not be readable by others) or an environment
    variable, as the settings name them (``[server] <setting>_file`` / ``<setting>_env``, in messages). The PIN
    itself is never a setting.

    Raises:
        ConfigError: neither is set, the file is missing or group/world-readable, or the variable is unset.
    """
    env = os.environ if environ is None else environ
    if pin_file:
        path = Path(pin_file)
        try:
            st = path.stat()
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"[server] {setting}_file {path}: {e.strerror or e}") from e
        if st.st_mode & 0o077:
            raise ConfigError(f"[server] {setting}_file {path} is readable by others (mode "
                              f"{st.st_mode & 0o777:o}); make it 0600")
        return text.splitlines()[0] if text else ""
    if pin_env:
        value = env.get(pin_env)
        if value is None:
            raise ConfigError(f"[server] {setting}_env names {pin_env}, which is not set")
        return value
    raise ConfigError(f"the token needs a PIN: set [server] {setting}_file or {setting}_env")


def encode_der(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
