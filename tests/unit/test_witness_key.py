"""The witness key (docs/witness.md section 2): Ed25519 in the software token (usage "witness", no certificate,
encrypted under the PIN, one per token) or in ``<state_dir>/witness.key``; what the signer makes of it."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.errors import ConfigError, PkiError, RequestError
from gateway.identifiers import SecurityServerId
from gateway.token import model
from gateway.token.model import KdfParams
from gateway.token.soft import SoftToken
from gateway.trust.cosignature import parse_line, parse_vkey, verify
from gateway.witness import signer as witness_signer

PIN = "correct horse battery"
FAST = KdfParams(salt=b"0123456789abcdef", time_cost=1, memory_kib=256, parallelism=1)  # tests only
NOW = datetime(2030, 1, 1, tzinfo=UTC)
SERVER = SecurityServerId.parse("DEV/GOV/1002/ss2")


async def new_token(tmp_path: Path) -> SoftToken:
    return await SoftToken.init(tmp_path / "token", PIN, kdf=FAST)


async def test_the_token_keeps_one_encrypted_witness_key(tmp_path: Path) -> None:
    token = await new_token(tmp_path)
    assert await token.witness_private_key() is None
    entry = await token.generate_witness_key(label="witness", now=NOW)
    assert (entry.usage, entry.key_type, entry.certs) == ("witness", "ed25519", ())
    key = await token.witness_private_key()
    assert key is not None and model.spki_sha256(key) == entry.id
    # encrypted PKCS#8 on disk, readable by OpenSSL with the PIN-derived passphrase only
    pem = token.key_path(entry.id).read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in pem and os.stat(token.key_path(entry.id)).st_mode & 0o777 == 0o600
    out = subprocess.run(["openssl", "pkey", "-noout", "-passin", "pass:wrong"], input=pem, capture_output=True)
    assert out.returncode != 0
    # a second one is refused: the key is the witness's identity in every policy
    with pytest.raises(RequestError, match="has a witness key already") as info:
        await token.generate_witness_key(now=NOW)
    assert info.value.status == 409
    # it has no certificate and no CSR, and is not a signing key
    with pytest.raises(PkiError, match="no certificates"):
        await token.csr(entry.id, server_id=SERVER)
    with pytest.raises(PkiError, match="Ed25519 witness key"):
        await token.private_key(entry.id)
    # reported like any key, without certificate
    (row,) = await token.report(now=NOW)
    assert (row.usage, row.key_type, row.sha256) == ("witness", "ed25519", None)
    # it needs the PIN
    token.logout()
    with pytest.raises(RequestError, match="not logged in"):
        await token.witness_private_key()


async def test_a_new_pin_reencrypts_the_witness_key_too(tmp_path: Path) -> None:
    token = await new_token(tmp_path)
    await token.generate_key("sign", now=NOW)
    await token.generate_witness_key(now=NOW)
    before = await token.witness_private_key()
    assert before is not None
    await token.change_pin(PIN, "another good pin", now=NOW)
    fresh = SoftToken(token.dir)
    await fresh.login("another good pin", now=NOW)
    after = await fresh.witness_private_key()
    assert after is not None and model.spki_sha256(after) == model.spki_sha256(before)


async def test_load_signer_from_the_token_makes_the_key_once(tmp_path: Path) -> None:
    token = await new_token(tmp_path)
    name = witness_signer.default_name(str(SERVER))
    assert name == "DEV/GOV/1002/ss2/witness"
    assert await witness_signer.load_signer(name=name, token=token, state_dir=tmp_path, create=False,
                                            now=NOW) is None
    first = await witness_signer.load_signer(name=name, token=token, state_dir=tmp_path, create=True, now=NOW)
    again = await witness_signer.load_signer(name=name, token=token, state_dir=tmp_path, create=True, now=NOW)
    assert first is not None and again is not None and first.key == again.key
    # what it cosigns verifies with its vkey
    key = parse_vkey(first.key.vkey)
    text = b"DEV/GOV/1001/ss1/messagelog\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    assert verify(parse_line(first.cosign(text, 1767225600).line()), text, key) == 1767225600
    assert len([k for k in (await token.state()).keys if k.usage == "witness"]) == 1


def test_the_key_file_is_made_owner_only_and_read_back(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert witness_signer.file_key(state, create=False) is None
    made = witness_signer.file_key(state, create=True)
    path = state / witness_signer.KEY_FILE
    assert made is not None and os.stat(path).st_mode & 0o777 == 0o600
    again = witness_signer.file_key(state, create=True)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert again is not None and again.public_key().public_bytes(*raw) == made.public_key().public_bytes(*raw)


def test_a_bad_key_file_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / witness_signer.KEY_FILE).write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="cannot be read"):
        witness_signer.file_key(tmp_path, create=True)
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / witness_signer.KEY_FILE).write_bytes(pem)
    with pytest.raises(ConfigError, match="is not an Ed25519 key"):
        witness_signer.file_key(tmp_path, create=True)
