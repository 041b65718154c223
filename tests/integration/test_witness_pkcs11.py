"""The witness key on a PKCS#11 device (SoftHSM2; docs/witness.md section 2): an Ed25519 key pair made on the
device that never leaves it, cosignatures (CKM_EDDSA) that verify with its vkey, the order in which a server
finds its witness key, and the CLI."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import hsm_kit
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.cli import main
from gateway.errors import RequestError
from gateway.token import model
from gateway.token.pkcs11 import Pkcs11Token
from gateway.trust.cosignature import parse_line, parse_vkey, verify
from gateway.witness import signer as witness_signer
from gateway.witness.signer import DeviceWitnessSigner

pytestmark = pytest.mark.integration

NAME = "DEV/GOV/1002/ss2/witness"
TEXT = b"DEV/GOV/1001/ss1/messagelog\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hsm_kit.SoftHsm]:
    yield hsm_kit.setup(tmp_path_factory.mktemp("softhsm"))


async def logged_in(hsm: hsm_kit.SoftHsm) -> tuple[hsm_kit.Device, Pkcs11Token]:
    device = hsm_kit.new_device(hsm)
    token = Pkcs11Token(device.library, device.label, retry_seconds=0.0)
    await token.login(hsm_kit.USER_PIN)
    return device, token


async def test_the_witness_key_is_made_and_used_on_the_device(hsm: hsm_kit.SoftHsm, tmp_path: Path) -> None:
    _device, token = await logged_in(hsm)
    try:
        assert await token.witness_public_key() is None
        signer = await witness_signer.load_signer(name=NAME, token=None, state_dir=tmp_path, create=True, now=NOW,
                                                  device=token)
        assert isinstance(signer, DeviceWitnessSigner)
        assert not (tmp_path / witness_signer.KEY_FILE).exists()  # made on the device, not in the state dir
        (entry,) = (await token.state()).keys
        assert (entry.usage, entry.key_type) == ("witness", "ed25519")
        assert await token.private_key_attributes(entry.id) == {
            "sensitive": True, "extractable": False, "never_extractable": True}
        found = await token.witness_public_key()
        assert found is not None and model.spki_sha256(ed25519.Ed25519PublicKey.from_public_bytes(found[1])) == entry.id
        # its cosignature verifies with its vkey, as a verifier with only the vkey checks it
        line = (await asyncio.to_thread(signer.cosign, TEXT, 1767225600)).line()
        assert verify(parse_line(line), TEXT, parse_vkey(signer.key.vkey)) == 1767225600
        # one witness key per token; the same one is found again
        with pytest.raises(RequestError, match="has a witness key already"):
            await token.generate_witness_key(now=NOW)
        again = await witness_signer.load_signer(name=NAME, token=None, state_dir=tmp_path, create=True, now=NOW,
                                                 device=token)
        assert again is not None and again.key == signer.key
    finally:
        token.close()


async def test_a_server_that_gains_a_device_keeps_its_witness_key(hsm: hsm_kit.SoftHsm, tmp_path: Path) -> None:
    existing = witness_signer.file_key(tmp_path, create=True)
    assert existing is not None
    _device, token = await logged_in(hsm)
    try:
        signer = await witness_signer.load_signer(name=NAME, token=None, state_dir=tmp_path, create=True, now=NOW,
                                                  device=token)
        assert signer is not None and not isinstance(signer, DeviceWitnessSigner)
        assert signer.key.public_key == existing.public_key().public_bytes_raw()
        assert await token.witness_public_key() is None  # nothing was made on the device
    finally:
        token.close()


def test_cli_generates_and_prints_the_device_witness_key(hsm: hsm_kit.SoftHsm, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    device = hsm_kit.new_device(hsm)
    pin = tmp_path / "pin"
    pin.write_text(hsm_kit.USER_PIN + "\n")
    pin.chmod(0o600)
    config = tmp_path / "s.toml"
    config.write_text(f'[server]\nid = "DEV/GOV/1002/ss2"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'pkcs11_library = "{device.library}"\npkcs11_token_label = "{device.label}"\n'
                      f'pkcs11_pin_file = "{pin}"\n')
    base = ["-c", str(config), "token", "--device"]
    assert main([*base, "generate-key", "--usage", "witness"]) == 0
    made = capsys.readouterr().out.splitlines()
    assert made[0].startswith("generated ed25519 witness key ") and made[1].startswith(f"{NAME}+")
    assert main([*base, "witness-key"]) == 0
    assert capsys.readouterr().out.strip() == made[1]
    assert parse_vkey(made[1]).key_id == hashlib.sha256(NAME.encode() + b"\n\x04" + parse_vkey(made[1]).public_key
                                                       ).digest()[:4]
