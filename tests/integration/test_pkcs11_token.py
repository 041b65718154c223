"""PKCS#11 tokens against SoftHSM2: keys made and used on the device, CSRs it signs, certificates stored on
it, signatures that verify, keys that cannot be read out, and a device that vanishes and returns."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import hsm_kit
import pytest
from cryptography import x509
from pkihelpers import ThrowawayPki, make_pki

from gateway.cli import main
from gateway.errors import ConfigError, PinIncorrect, RequestError, TokenUnavailable, WrongIdentity
from gateway.identifiers import SecurityServerId
from gateway.messagelog.checkpoint import Checkpoint, checkpoint_origin, sign_checkpoint, verify_checkpoint
from gateway.protocol import signatures
from gateway.token import model
from gateway.token.pkcs11 import Pkcs11Token
from gateway.trust import keys

SERVER = SecurityServerId.parse("DEV/GOV/1001/ss1")


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hsm_kit.SoftHsm]:
    yield hsm_kit.setup(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def logged_in(hsm: hsm_kit.SoftHsm, **kw: object) -> tuple[hsm_kit.Device, Pkcs11Token]:
    device = hsm_kit.new_device(hsm)
    token = Pkcs11Token(device.library, device.label, retry_seconds=0.0, **kw)  # type: ignore[arg-type]
    await token.login(hsm_kit.USER_PIN)
    return device, token


async def with_sign_cert(token: Pkcs11Token, pki: ThrowawayPki, key_type: keys.KeyType = "ec-p256") -> str:
    now = datetime.now(UTC)
    key = await token.generate_key("sign", key_type=key_type, label="device signing", now=now)
    csr = await token.csr(key.id, server_id=SERVER)
    cert = pki.ca.issue(csr, kind="sign", expected_identity=SERVER.owner, now=now)
    entry = await token.import_cert(
        keys.cert_pem(cert).encode(), server_id=SERVER, ca_for=model.ca_finder([pki.ca_cert]), now=now
    )
    await token.activate(entry.sha256)
    return key.id


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048", "rsa-3072"])
async def test_key_csr_certificate_and_signature_on_the_device(
    hsm: hsm_kit.SoftHsm,
    pki: ThrowawayPki,
    key_type: keys.KeyType,
) -> None:
    _device, token = await logged_in(hsm)
    key_id = await with_sign_cert(token, pki, key_type)
    state = await token.state()
    [key] = state.keys
    assert (key.id, key.usage, key.key_type, key.label) == (key_id, "sign", key_type, "device signing")
    assert [c.state for c in key.certs] == ["active"]
    # the key never leaves the device
    assert await token.private_key_attributes(key_id) == {
        "sensitive": True,
        "extractable": False,
        "never_extractable": True,
    }
    # a message signed by the device verifies with the certificate (RFC 9421 form)
    signer = await token.signer(now=datetime.now(UTC))
    assert signer.alg == keys.signature_alg_for(signer.cert.public_key())  # type: ignore[arg-type]
    data = b"signature base of an exchange"
    sig = await signer.sign_async(data)
    signatures._verify_value(signer.cert, signer.alg, data, sig)
    signatures._verify_value(signer.cert, signer.alg, data, signer.sign(data))
    # the certificate is on the token as a CKO_CERTIFICATE object too: a fresh handle on the device sees it all
    again = Pkcs11Token(token.library, token.token_label)
    await again.login(hsm_kit.USER_PIN)
    assert (await again.state()).keys == state.keys
    token.close()
    again.close()


async def test_checkpoint_signed_by_the_device(hsm: hsm_kit.SoftHsm, pki: ThrowawayPki) -> None:
    _device, token = await logged_in(hsm)
    await with_sign_cert(token, pki)
    signer = await token.signer(now=datetime.now(UTC))
    cp = Checkpoint(origin=checkpoint_origin("DEV/GOV/1001/ss1"), size=3, root_hash=bytes(32))
    note = await asyncio.to_thread(sign_checkpoint, cp, signer)
    assert verify_checkpoint(note, signer.cert, origin=cp.origin) == cp
    token.close()


async def test_wrong_pin_and_unknown_token_are_refused(hsm: hsm_kit.SoftHsm) -> None:
    device = hsm_kit.new_device(hsm)
    token = Pkcs11Token(device.library, device.label)
    with pytest.raises(PinIncorrect) as e:
        await token.login("not the device pin")
    assert e.value.xroad_type == "Signer.PinIncorrect" and device.label in e.value.message
    assert not token.logged_in
    with pytest.raises(RequestError, match="not logged in"):
        await token.state()
    missing = Pkcs11Token(device.library, "no-such-token")
    with pytest.raises(TokenUnavailable, match="no token labelled 'no-such-token'"):
        await missing.login(hsm_kit.USER_PIN)
    broken = Pkcs11Token("/nonexistent/libpkcs11.so", "x")
    with pytest.raises(TokenUnavailable, match=r"PKCS#11 library /nonexistent/libpkcs11\.so"):
        await broken.login(hsm_kit.USER_PIN)
    with pytest.raises(ConfigError, match="pkcs11_sessions is 0"):
        Pkcs11Token(device.library, device.label, sessions=0)
    for t in (token, missing, broken):
        t.close()


async def test_import_checks_are_the_software_tokens(hsm: hsm_kit.SoftHsm, pki: ThrowawayPki) -> None:
    _device, token = await logged_in(hsm)
    now = datetime.now(UTC)
    key = await token.generate_key("auth", now=now)
    csr = await token.csr(key.id, server_id=SERVER)
    other = SecurityServerId.parse("DEV/GOV/1001/ss2")
    cert = pki.ca.issue(csr, kind="auth", expected_identity=SERVER, now=now)
    with pytest.raises(WrongIdentity):
        await token.import_cert(
            keys.cert_pem(cert).encode(), server_id=other, ca_for=model.ca_finder([pki.ca_cert]), now=now
        )
    assert (await token.state()).keys[0].certs == ()
    with pytest.raises(ConfigError, match="Python's ssl module loads keys only from files"):
        await token.tls_material(now=now)
    await token.delete_key(key.id)
    assert (await token.state()).keys == ()
    token.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # see test_pkcs11_exchange.py
async def test_device_vanishing_fails_closed_and_recovers(hsm: hsm_kit.SoftHsm, pki: ThrowawayPki) -> None:
    device, token = await logged_in(hsm, sessions=2)
    await with_sign_cert(token, pki)
    signer = await token.signer(now=datetime.now(UTC))
    await signer.sign_async(b"before")
    assert token.status().state == "available"
    moved = hsm_kit.remove(device)
    with pytest.raises(TokenUnavailable) as e:
        await signer.sign_async(b"while removed")
    assert e.value.xroad_type == "Server.TokenNotAvailable" and e.value.status == 500
    status = await token.probe()
    assert status.state == "unavailable" and status.error
    with pytest.raises(TokenUnavailable):  # still gone: fails at once, every time
        signer.sign(b"again")
    hsm_kit.restore(device, moved)
    assert (await token.probe()).state == "available"
    sig = await signer.sign_async(b"after")
    signatures._verify_value(signer.cert, signer.alg, b"after", sig)
    token.close()


async def test_device_signing_does_not_hold_the_loop(hsm: hsm_kit.SoftHsm, pki: ThrowawayPki) -> None:
    _device, token = await logged_in(hsm, sessions=4)
    await with_sign_cert(token, pki)
    signer = await token.signer(now=datetime.now(UTC))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    tick = asyncio.create_task(ticker())
    sigs = await asyncio.gather(*(signer.sign_async(b"m%d" % i) for i in range(40)))
    tick.cancel()
    assert len(set(sigs)) == 40 and ticks > 40  # the loop kept turning while the device signed
    token.close()


def test_cli_manages_a_device(
    hsm: hsm_kit.SoftHsm,
    pki: ThrowawayPki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`gateway token --device ...`: key, CSR, import, activate, keys, status on the device of the settings."""
    device = hsm_kit.new_device(hsm)
    conf_dir = tmp_path / "globalconf"
    pin_file = tmp_path / "device.pin"
    pin_file.write_text(hsm_kit.USER_PIN + "\n")
    pin_file.chmod(0o600)
    config = tmp_path / "ss.toml"
    config.write_text(
        f'[server]\nid = "{SERVER}"\npkcs11_library = "{device.library}"\npkcs11_token_label = "{device.label}"\n'
        f'pkcs11_pin_file = "{pin_file}"\n[globalconf]\ncache_dir = "{conf_dir}"\n'
    )
    monkeypatch.setattr("gateway.cli.commands.token._conf", _fake_conf(pki))

    def gateway(*argv: str) -> str:
        assert main(["token", "-c", str(config), "--device", *argv]) == 0
        return capsys.readouterr().out

    out = gateway("generate-key", "--usage", "sign", "--key-type", "rsa-2048")
    key_id = out.split()[3]
    csr = tmp_path / "sign.csr"
    gateway("csr", key_id[:12], "--out", str(csr))
    cert = pki.ca.issue(
        x509.load_pem_x509_csr(csr.read_bytes()), kind="sign", expected_identity=SERVER.owner, now=datetime.now(UTC)
    )
    pem = tmp_path / "sign.pem"
    pem.write_text(keys.cert_pem(cert))
    assert "imported sign certificate" in gateway("import-cert", str(pem))
    gateway("activate", keys.cert_sha256_hex(cert)[:12])
    listed = json.loads(gateway("keys", "--json"))
    assert [(r["key_id"], r["key_type"], r["state"], r["in_use"]) for r in listed] == [
        (key_id, "rsa-2048", "active", True)
    ]
    assert f"PKCS#11 token '{device.label}'" in gateway("status") and "available, 1 keys" in gateway("status")
    assert main(["token", "-c", str(config), "--device", "init"]) == 2
    assert "softhsm2-util --init-token" in capsys.readouterr().err


def _fake_conf(pki: ThrowawayPki) -> object:
    """The CLI's cached global configuration, reduced to what import-cert asks of it: the CA."""

    class Conf:
        ca_for = staticmethod(model.ca_finder([pki.ca_cert]))

    async def conf(_settings: object) -> Conf:
        return Conf()

    return conf


def test_cli_with_several_devices(hsm: hsm_kit.SoftHsm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`gateway token COMMAND --device NAME` picks one of several devices; `gateway token devices` lists them all
    with their state (exit code 1 while one is unavailable)."""
    one, two = hsm_kit.new_device(hsm), hsm_kit.new_device(hsm)
    pin_file = tmp_path / "device.pin"
    pin_file.write_text(hsm_kit.USER_PIN + "\n")
    pin_file.chmod(0o600)
    config = tmp_path / "ss.toml"
    config.write_text(
        f'[server]\nid = "{SERVER}"\npkcs11_library = "{one.library}"\npkcs11_token_label = "{one.label}"\n'
        f'pkcs11_pin_file = "{pin_file}"\n'
        f'[[server.pkcs11]]\nname = "hsm2"\nlibrary = "{two.library}"\ntoken_label = "{two.label}"\n'
        f'pin_file = "{pin_file}"\n'
    )

    def gateway(*argv: str, code: int = 0) -> tuple[str, str]:
        assert main(["token", "-c", str(config), *argv]) == code
        out = capsys.readouterr()
        return out.out, out.err

    # a bare --device is ambiguous with two devices; an unknown name is refused
    assert "name one with `gateway token COMMAND --device NAME`" in gateway("--device", "status", code=2)[1]
    assert "no PKCS#11 device named 'hsm3' in the settings (devices: device, hsm2)" in gateway(
        "status", "--device", "hsm3", code=2)[1]
    out, _ = gateway("generate-key", "--usage", "sign", "--device", "hsm2")
    assert out.startswith("generated ec-p256 key") and "for sign certificates" in out
    assert f"hsm2: PKCS#11 token '{two.label}'" in gateway("status", "--device", "hsm2")[0]
    assert "available, 1 keys" in gateway("status", "--device", "hsm2")[0]
    assert "available, 0 keys" in gateway("status", "--device", "device")[0]
    listed = json.loads(gateway("devices", "--json")[0])
    assert [(d["name"], d["token_label"], d["state"], d["keys"]) for d in listed] == [
        ("device", one.label, "available", 0), ("hsm2", two.label, "available", 1)]
    moved = hsm_kit.remove(one)
    try:
        out, _ = gateway("devices", code=1)
    finally:
        hsm_kit.restore(one, moved)
    lines = out.splitlines()
    assert lines[0].startswith(f"device: PKCS#11 token '{one.label}'") and "unavailable" in lines[0]
    # (a process that has not opened hsm2 before finds it through the slot list, which SoftHSM2 fails as a whole
    # while one of its tokens is broken: that is SoftHSM2's, docs/tokens.md "Several devices")
    assert lines[1].startswith("hsm2:")
