"""A security server whose signing key is on a PKCS#11 device (SoftHSM2): its exchanges are signed there and
verified by the peer; its authentication key stays in the software token. The device vanishing makes
exchanges fail closed (503, ``Server.ClientProxy.TokenNotAvailable``) and readiness 503; they recover when it
returns, without restart."""

from __future__ import annotations

import dataclasses
import html
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import hsm_kit
import pytest
import pytest_asyncio
from admin_kit import PASSWORD
from exchange_kit import PROBE, call, probed_federation
from waiting import wait_for_condition

from gateway.admin.routes import ROUTES_BY_ID
from gateway.admin.schema import validate
from gateway.dev.demo import Federation
from gateway.errors import ConfigError
from gateway.messagelog.checkpoint import checkpoint_origin, verify_checkpoint
from gateway.server.runtime import SecurityServer
from gateway.settings import Pkcs11Device
from gateway.token.pkcs11 import Pkcs11Token
from gateway.trust import keys


async def device_signing_cert(fed: Federation, server: SecurityServer, device: hsm_kit.Device) -> str:
    """What an operator does on the device: key, CSR, certificate from the CA, import, activate."""
    token = Pkcs11Token(device.library, device.label, sessions=1)
    await token.login(hsm_kit.USER_PIN)
    try:
        now = server.clock()
        key = await token.generate_key("sign", now=now)
        csr = await token.csr(key.id, server_id=server.server_id)
        cert = fed.ca.issue(csr, kind="sign", expected_identity=server.server_id.owner, now=now)
        conf = server.globalconf.current
        assert conf is not None
        entry = await token.import_cert(
            keys.cert_pem(cert).encode(), server_id=server.server_id, ca_for=conf.ca_for, now=now
        )
        await token.activate(entry.sha256)
        return entry.sha256
    finally:
        token.close()


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Federation, SecurityServer, hsm_kit.Device, str]]:
    hsm = hsm_kit.setup(tmp_path / "softhsm")
    device = hsm_kit.new_device(hsm)
    async with probed_federation(tmp_path / "fed", key_store="token", adapters_at_probe=True) as (fed, _probe):
        ss1 = fed.server("ss1")
        sha256 = await device_signing_cert(fed, ss1, device)
        pin_file = tmp_path / "device.pin"
        pin_file.write_text(hsm_kit.USER_PIN + "\n")
        pin_file.chmod(0o600)
        await ss1.stop()
        s = ss1.settings.server
        settings = dataclasses.replace(
            ss1.settings,
            server=dataclasses.replace(
                s,
                client_port=0,
                client_https_port=-1,
                server_port=0,
                admin_port=0,
                ops_port=0,
                pkcs11_library=device.library,
                pkcs11_token_label=device.label,
                pkcs11_pin_file=str(pin_file),
                serverconf_reload_seconds=0.2,
            ),
        )
        hsm_ss1 = SecurityServer(settings, clock=ss1.clock)
        await hsm_ss1.start()
        try:
            yield fed, hsm_ss1, device, sha256
        finally:
            await hsm_ss1.stop()


# A search that the vanished device broke off is finalised by python-pkcs11 in __del__, on a session that is closed
# by then: "Exception ignored in OperationContext.__del__" (SessionHandleInvalid), harmless.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_exchange_signed_on_the_device_recovery_and_settings(
    world: tuple[Federation, SecurityServer, hsm_kit.Device, str],
) -> None:
    fed, ss1, device, sha256 = world
    assert ss1.context is not None and ss1.health is not None and ss1.device is not None
    assert keys.cert_sha256_hex(ss1.context.signer.cert) == sha256
    assert ss1.token is not None  # the TLS key stays in the software token
    answer = await call(ss1, f"{PROBE}/a")
    assert answer.status == 200, answer.body
    # the peer verified the request signed by the device and logged it with the device's certificate
    ss2 = fed.server("ss2")
    assert ss2.context is not None
    recs = [r.decode() for r in await ss2.messagelog.read(ss2.context.origin, limit=10_000)]
    last = next(r for r in reversed(recs) if r.kind == "request")
    assert keys.cert_sha256_hex(keys.load_certificate(last.signing_cert)) == sha256
    # the message log's checkpoint is signed by the device too
    assert ss1.checkpointer is not None
    made = (await ss1.checkpointer.run_once(ss1.clock(), force=True)).checkpoint
    assert made is not None
    verify_checkpoint(made.note, ss1.context.signer.cert, origin=checkpoint_origin(ss1.origin))
    # both tokens are listed with their state; the device's key is the one in use for signing
    assert [(t["name"], t["state"], t["usage"]) for t in ss1.tokens()] == [
        ("software", "available", "auth"),
        ("device", "available", "sign"),
    ]
    reports = await ss1.certificates(with_ocsp=False)
    assert [r.sha256 for r in reports if r.in_use and r.usage == "sign"] == [sha256]
    checks = {c.name: c.ok for c in await ss1.health.checks()}
    assert checks["pkcs11:device"] is True
    # ... in the admin API too (the web interface's keys page shows the same list)
    await ss1.admin_store.add_user("viewer", PASSWORD, frozenset({"observer"}), now=ss1.clock())
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{ss1.admin_url}/api/v1/login", json={"username": "viewer", "password": PASSWORD}) as r:
            session = (await r.json())["token"]
        async with http.get(f"{ss1.admin_url}/api/v1/tokens", headers={"Authorization": f"Bearer {session}"}) as r:
            listed = await r.json()
    validate(listed, ROUTES_BY_ID["listTokens"].response, where="listTokens")
    assert [(t["kind"], t["state"]) for t in listed["tokens"]] == [("software", "available"), ("pkcs11", "available")]
    # the web interface's keys page lists both tokens
    async with aiohttp.ClientSession(ss1.admin_url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get("/ui/login") as r:
            form_token = re.search(r'name="_csrf" value="([^"]*)"', await r.text())
        assert form_token is not None
        login = {"_csrf": form_token.group(1), "username": "viewer", "password": PASSWORD, "next": "/ui/keys"}
        async with browser.post("/ui/login", data=login) as r:
            page = html.unescape(await r.text())
    assert r.status == 200 and "Tokens of this server: 2" in page, page[:2000]
    assert "device" in page and "software" in page

    moved = hsm_kit.remove(device)
    try:
        answer = await call(ss1, f"{PROBE}/b")
        assert answer.status == 500, answer.body
        assert answer.headers["X-Road-Error"] == "Server.ClientProxy.TokenNotAvailable"
        assert device.label in json.loads(answer.body)["message"]
        checks = {c.name: c.ok for c in await ss1.health.checks()}
        assert checks["pkcs11:device"] is False
        assert ss1.tokens()[1]["state"] == "unavailable"
    finally:
        hsm_kit.restore(device, moved)
    await wait_for_condition(
        lambda: ss1.device is not None and ss1.device.available, timeout=10, what="the key watch finds the device again"
    )
    assert (await call(ss1, f"{PROBE}/c")).status == 200
    assert {c.name: c.ok for c in await ss1.health.checks()}["pkcs11:device"] is True
    # a new certificate activated on the device (`gateway token --device activate` elsewhere) is taken up
    renewed = await device_signing_cert(fed, ss1, device)
    await wait_for_condition(
        lambda: keys.cert_sha256_hex(ss1.context.signer.cert) == renewed,  # type: ignore[union-attr]
        timeout=10,
        what="the key watch switches to the device's new certificate",
    )
    assert (await call(ss1, f"{PROBE}/d")).status == 200

    # (b) settings that cannot work stop a start with a precise message; a second device, empty
    await ss1.stop()  # (its log origin is free for the starts below)
    empty = hsm_kit.new_device(device.hsm)
    s = ss1.settings.server
    base = dataclasses.replace(
        s,
        client_port=0,
        client_https_port=-1,
        server_port=0,
        admin_port=-1,
        ops_port=-1,
        pkcs11_pin_file="",
        pkcs11_token_label=empty.label,
    )
    bad_pin = Path(s.state_dir).parent / "bad.pin"
    bad_pin.write_text("wrong device pin\n")
    bad_pin.chmod(0o600)
    for server_settings, message in (
        (base, "no PIN source; set pkcs11_pin_file or pkcs11_pin_env"),
        (dataclasses.replace(base, pkcs11_pin_file=str(bad_pin)), "is incorrect"),
        (
            dataclasses.replace(base, pkcs11_pin_file=str(bad_pin), pkcs11_token_label="absent"),
            "no token labelled 'absent'",
        ),
        (dataclasses.replace(base, pkcs11_pin_env="HSM_TEST_PIN", pkcs11_sessions=0), "pkcs11_sessions is 0"),
        (  # a second device whose PIN variable is not set stops the start, naming the device
            dataclasses.replace(base, pkcs11_pin_env="HSM_TEST_PIN", pkcs11=(Pkcs11Device(
                name="hsm9", library=empty.library, token_label=device.label, pin_env="HSM_UNSET_PIN"),)),
            "PKCS#11 token 'hsm9' (label",
        ),
        (
            dataclasses.replace(base, pkcs11_pin_env="HSM_TEST_PIN", pkcs11=(Pkcs11Device(
                name="hsm9", library=empty.library, token_label=empty.label, pin_env="HSM_TEST_PIN"),)),
            "devices 'device' and 'hsm9' are the same token",
        ),
    ):
        server = SecurityServer(dataclasses.replace(ss1.settings, server=server_settings), clock=ss1.clock)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HSM_TEST_PIN", hsm_kit.USER_PIN)
            with pytest.raises(ConfigError) as e:
                await server.start()
        assert message in e.value.message, e.value.message
    # no device and no software token with a signing certificate to use: the start would stop, naming the devices
    server = SecurityServer(dataclasses.replace(ss1.settings, server=base), clock=ss1.clock)
    blank = Pkcs11Token(empty.library, empty.label, sessions=1, name="blank")
    await blank.login(hsm_kit.USER_PIN)
    try:
        server.devices = {"blank": blank}
        with pytest.raises(ConfigError) as e:
            await server._signing_token()
        assert e.value.message == "no active signing certificate valid now on PKCS#11 token(s) 'blank'"
    finally:
        blank.close()
