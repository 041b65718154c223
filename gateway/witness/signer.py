"""Where the witness key comes from: the software token, or a key file in the state directory (I/O).

docs/witness.md section 2. The witness cosigns with an Ed25519 key (c2sp.org/tlog-cosignature@v1.0.1, type
0x04) that never leaves the server:

- with ``[server] token_dir``: the token's key of usage ``witness`` (encrypted under the PIN like every key of
  the token; ``gateway token generate-key --usage witness``);
- without a token (plain key files): ``<state_dir>/witness.key``, PKCS#8 PEM, mode 0600.

When ``[witness] enabled`` and there is none, the server generates it at start (and logs its vkey), so that a
witness needs no step beyond switching it on; the operator then hands the vkey (``gateway token witness-key``,
or ``GET /witness`` on the admin API) to the central server for the witness policies.

A PKCS#11 device keeps the signing key only: the witness key stays in the software token or the key file
(the device path does not offer Ed25519 here).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.errors import ConfigError
from gateway.files import private_dir
from gateway.token.soft import SoftToken
from gateway.witness.service import KeyWitnessSigner

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


async def load_signer(
    *, name: str, token: SoftToken | None, state_dir: str | Path, create: bool, now: datetime,
) -> KeyWitnessSigner | None:
    """The witness signer of a server (module docstring), or None when there is no key and not ``create``.

    Raises:
        ConfigError: the key file cannot be used.
        RequestError, PkiError: the token's key cannot be used.
    """
    key = (await token_key(token, create=create, now=now) if token is not None
           else file_key(state_dir, create=create))
    return None if key is None else KeyWitnessSigner(name, key)


__all__ = ["KEY_FILE", "default_name", "file_key", "load_signer", "token_key"]
