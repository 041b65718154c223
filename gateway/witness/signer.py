"""Where the witness key comes from: the software token, or a key file in the state directory (I/O).

docs/witness.md section 2. The witness cosigns with an Ed25519 key (c2sp.org/tlog-cosignature@v1.0.1, type
0x04) that never leaves the server:

- with ``[server] token_dir``: the token's key of usage ``witness`` (encrypted under the PIN like every key of
  the token; ``gateway token generate-key --usage witness``);
- without a token (plain key files): ``<state_dir>/witness.key``, PKCS#8 PEM, mode 0600.

When ``[witness] enabled`` and there is none, the server generates it at start (and logs its vkey), so that a
witness needs no step beyond switching it on; the operator then hands the vkey (``gateway token witness-key``,
or ``GET /witness`` on the admin API) to the central server for the witness policies.

- with a PKCS#11 device (``[server] pkcs11_library``): an Ed25519 key pair on the device (CKM_EDDSA, the
  private key sensitive and not extractable; ``gateway token --device generate-key --usage witness``).

Which one, in order: the device's witness key if the device has one; else the software token's, or the key
file's, if there is one (a server that gains a device keeps its witness identity); else, when ``create``, a
new key on the device if there is one, else in the token, else in the key file.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.errors import ConfigError, TokenUnavailable
from gateway.files import private_dir
from gateway.token.pkcs11 import Pkcs11Token
from gateway.token.soft import SoftToken
from gateway.trust.cosignature import Cosignature, WitnessKey, signed_message
from gateway.witness.service import KeyWitnessSigner, WitnessSigner

KEY_FILE = "witness.key"
NAME_SUFFIX = "/witness"  # default key name: <server id>/witness


def default_name(server_id: str, configured: str = "") -> str:
    """The witness's key name: ``[witness] name``, or ``<server id>/witness``."""
    return configured or f"{server_id}{NAME_SUFFIX}"


def _read_file_key(path: Path) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"witness key {path} cannot be read: {e}") from e
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"witness key {path} is not an Ed25519 key")
    return key


def file_key(state_dir: str | Path, *, create: bool) -> ed25519.Ed25519PrivateKey | None:
    """The witness key of ``<state_dir>/witness.key``; generated (mode 0600) when missing and ``create``.

    Raises:
        ConfigError: the file cannot be read, is not an Ed25519 key, or cannot be written.
    """
    path = Path(state_dir) / KEY_FILE
    if path.exists():
        return _read_file_key(path)
    if not create:
        return None
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        private_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
    except FileExistsError:  # another worker made it first: use that one
        return _read_file_key(path)
    except OSError as e:
        raise ConfigError(f"witness key {path} cannot be written: {e.strerror or e}") from e
    return key


async def token_key(token: SoftToken, *, create: bool, now: datetime) -> ed25519.Ed25519PrivateKey | None:
    """The token's witness key; generated when missing and ``create`` (the token must be logged in).

    Raises:
        RequestError: the token is not logged in.
        PkiError: the key cannot be read or decrypted.
    """
    key = await token.witness_private_key()
    if key is None and create:
        await token.generate_witness_key(label="witness", now=now)
        key = await token.witness_private_key()
    return key


class DeviceWitnessSigner:
    """A :class:`~gateway.witness.service.WitnessSigner` over the witness key on a PKCS#11 device. :meth:`cosign`
    blocks for the device's time (the witness endpoint calls it off the event loop) and checks the device's
    signature before handing it out.

    Raises (cosign): TokenUnavailable when the device fails or answers a signature that does not verify.
    """

    __slots__ = ("_key", "_key_id", "_public", "_token")

    def __init__(self, name: str, token: Pkcs11Token, key_id: str, public_key: bytes) -> None:
        self._key = WitnessKey(name=name, public_key=public_key)
        self._token = token
        self._key_id = key_id
        self._public = ed25519.Ed25519PublicKey.from_public_bytes(public_key)

    @property
    def key(self) -> WitnessKey:
        return self._key

    def cosign(self, note_text: bytes, timestamp: int) -> Cosignature:
        message = signed_message(note_text, timestamp)
        signature = self._token.sign_eddsa_blocking(self._key_id, message)
        try:
            self._public.verify(signature, message)
        except InvalidSignature as e:
            raise TokenUnavailable("the device's Ed25519 signature does not verify with its public key") from e
        return Cosignature(name=self._key.name, key_id=self._key.key_id, timestamp=timestamp, signature=signature)


async def load_signer(
    *, name: str, token: SoftToken | None, state_dir: str | Path, create: bool, now: datetime,
    device: Pkcs11Token | None = None,
) -> WitnessSigner | None:
    """The witness signer of a server (module docstring), or None when there is no key and not ``create``.

    Raises:
        ConfigError: the key file cannot be used.
        RequestError, PkiError: the token's key cannot be used.
        TokenUnavailable: the device failed.
    """
    # (1) the device's key
    if device is not None:
        found = await device.witness_public_key()
        if found is not None:
            return DeviceWitnessSigner(name, device, *found)
    # (2) an existing key of the token or the key file
    key = (await token_key(token, create=False, now=now) if token is not None
           else file_key(state_dir, create=False))
    if key is not None:
        return KeyWitnessSigner(name, key)
    if not create:
        return None
    # (3) a new key: on the device if there is one, else where (2) looked
    if device is not None:
        await device.generate_witness_key(label="witness", now=now)
        found = await device.witness_public_key()
        assert found is not None
        return DeviceWitnessSigner(name, device, *found)
    key = (await token_key(token, create=True, now=now) if token is not None
           else file_key(state_dir, create=True))
    assert key is not None
    return KeyWitnessSigner(name, key)


__all__ = ["KEY_FILE", "DeviceWitnessSigner", "default_name", "file_key", "load_signer", "token_key"]
