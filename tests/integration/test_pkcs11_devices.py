"""Several PKCS#11 tokens at once ([[server.pkcs11]], docs/tokens.md): two SoftHSM2 tokens of one library beside
the software token, the signing key on one (hsm1), the witness key on the other (hsm2). Each device has its own
readiness check. The signing device vanishing makes exchanges fail closed (``Server.ClientProxy.TokenNotAvailable``)
and readiness 503 naming it, while the other device stays available; the witness device vanishing makes
readiness 503 naming it while exchanges go on; an idle device vanishing only warns. Everything recovers when
the device returns, and moving the signing certificate to the other device moves the signing there without
restart. The admin API lists every device and generates keys on a named one; the web keys page has a section
per device."""

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
from gateway.ops.readiness import report
from gateway.server.runtime import SecurityServer
from gateway.settings import Pkcs11Device, WitnessSettings
from gateway.token import model
from gateway.token.pkcs11 import Pkcs11Token
from gateway.trust import keys


async def signing_cert(fed: Federation, server: SecurityServer, device: hsm_kit.Device) -> str:
    """An operator's work on a device: key, CSR, certificate from the CA, import, activate; its fingerprint."""
    token = Pkcs11Token(device.library, device.label, sessions=1)
    await token.login(hsm_kit.USER_PIN)
    try:
        now = server.clock()
        key = await token.generate_key("sign", now=now)
        csr = await token.csr(key.id, server_id=server.server_id)
        cert = fed.ca.issue(csr, kind="sign", expected_identity=server.server_id.owner, now=now)
        conf = server.globalconf.current
        assert conf is not None
        entry = await token.import_cert(keys.cert_pem(cert).encode(), server_id=server.server_id,
                                        ca_for=conf.ca_for, now=now)
        await token.activate(entry.sha256)
        return entry.sha256
    finally:
        token.close()


async def deactivate(device: hsm_kit.Device, sha256: str) -> None:
    token = Pkcs11Token(device.library, device.label, sessions=1)
    await token.login(hsm_kit.USER_PIN)
    try:
        await token.deactivate(sha256)
    finally:
        token.close()


World = tuple[Federation, SecurityServer, hsm_kit.Device, hsm_kit.Device, str]


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    hsm = hsm_kit.setup(tmp_path / "softhsm")
    one, two = hsm_kit.new_device(hsm), hsm_kit.new_device(hsm)
    async with probed_federation(tmp_path / "fed", key_store="token", adapters_at_probe=True) as (fed, _probe):
        ss1 = fed.server("ss1")
        sha256 = await signing_cert(fed, ss1, one)
        witness_token = Pkcs11Token(two.library, two.label, sessions=1)
        await witness_token.login(hsm_kit.USER_PIN)
        try:
            await witness_token.generate_witness_key(label="witness", now=ss1.clock())
        finally:
            witness_token.close()
        pin_file = tmp_path / "device.pin"
        pin_file.write_text(hsm_kit.USER_PIN + "\n")
        pin_file.chmod(0o600)
        await ss1.stop()
        server = dataclasses.replace(
            ss1.settings.server, client_port=0, client_https_port=-1, server_port=0, admin_port=0, ops_port=-1,
            serverconf_reload_seconds=0.2,
            pkcs11=(Pkcs11Device(name="hsm1", library=one.library, token_label=one.label, pin_file=str(pin_file),
                                 sessions=1),
                    Pkcs11Device(name="hsm2", library=two.library, token_label=two.label, pin_env="HSM_TWO_PIN")),
        )
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HSM_TWO_PIN", hsm_kit.USER_PIN)
            settings = dataclasses.replace(ss1.settings, server=server, witness=WitnessSettings(enabled=True))
            multi = SecurityServer(settings, clock=ss1.clock)
            await multi.start()
        try:
            yield fed, multi, one, two, sha256
        finally:
            await multi.stop()


async def last_request_cert(fed: Federation) -> str:
    """The signing certificate of the last request the peer verified and logged."""
    ss2 = fed.server("ss2")
    assert ss2.context is not None
    recs = [r.decode() for r in await ss2.messagelog.read(ss2.context.origin, limit=10_000)]
    last = next(r for r in reversed(recs) if r.kind == "request")
    return keys.cert_sha256_hex(keys.load_certificate(last.signing_cert))


async def readiness(server: SecurityServer) -> tuple[int, dict[str, object]]:
    assert server.health is not None
    return report(await server.health.checks())


# A search that the vanished device broke off is finalised by python-pkcs11 in __del__, on a session that is closed
# by then: "Exception ignored in OperationContext.__del__" (SessionHandleInvalid), harmless.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_two_devices_sign_vanish_and_recover_independently(world: World) -> None:
    fed, ss1, one, two, sha256 = world
    assert ss1.context is not None and ss1.health is not None
    assert list(ss1.devices) == ["hsm1", "hsm2"]
    assert ss1.device is ss1.devices["hsm1"]
    assert keys.cert_sha256_hex(ss1.context.signer.cert) == sha256
    answer = await call(ss1, f"{PROBE}/a")
    assert answer.status == 200, answer.body
    assert await last_request_cert(fed) == sha256  # signed on hsm1, verified by the peer
    assert [(t["name"], t["kind"], t["state"], t["usage"]) for t in ss1.tokens()] == [
        ("software", "software", "available", "auth"),
        ("hsm1", "pkcs11", "available", "sign"),
        ("hsm2", "pkcs11", "available", "witness"),
    ]
    assert ss1.witness_device is ss1.devices["hsm2"]
    status, body = await readiness(ss1)
    assert status == 200, body

    # (a) the witness device vanishes: readiness 503 naming it, exchanges (signed on hsm1) go on
    moved = hsm_kit.remove(two)
    try:
        await wait_for_condition(lambda: not ss1.devices["hsm2"].available, timeout=10,
                                 what="the key watch notices hsm2 is gone")
        assert (await call(ss1, f"{PROBE}/b")).status == 200
        status, body = await readiness(ss1)
        assert status == 503 and body["failing"] == ["pkcs11:hsm2"], body
        checks = {c.name: c for c in await ss1.health.checks()}
        assert "'hsm2'" in checks["pkcs11:hsm2"].detail and "witness key" in checks["pkcs11:hsm2"].detail
        assert ss1.devices["hsm1"].available
    finally:
        hsm_kit.restore(two, moved)
    await wait_for_condition(lambda: ss1.devices["hsm2"].available, timeout=10, what="hsm2 is back")

    # (b) the signing device vanishes: exchanges fail closed naming it, readiness 503 names it, hsm2 unharmed
    moved = hsm_kit.remove(one)
    try:
        answer = await call(ss1, f"{PROBE}/c")
        assert answer.status == 500, answer.body
        assert answer.headers["X-Road-Error"] == "Server.ClientProxy.TokenNotAvailable"
        assert one.label in json.loads(answer.body)["message"]
        await wait_for_condition(lambda: not ss1.devices["hsm1"].available, timeout=10, what="hsm1 is seen gone")
        status, body = await readiness(ss1)
        checks = {c.name: c for c in await ss1.health.checks()}
        assert status == 503 and body["failing"] == ["pkcs11:hsm1"], body
        assert checks["pkcs11:hsm1"].ok is False and "'hsm1'" in checks["pkcs11:hsm1"].detail
        assert "sign key" in checks["pkcs11:hsm1"].detail
        assert checks["pkcs11:hsm2"].ok is True and not checks["pkcs11:hsm2"].warning
        assert ss1.devices["hsm2"].available
        assert [t["state"] for t in ss1.tokens()] == ["available", "unavailable", "available"]
    finally:
        hsm_kit.restore(one, moved)
    await wait_for_condition(lambda: ss1.devices["hsm1"].available, timeout=10, what="hsm1 is back")
    assert (await call(ss1, f"{PROBE}/d")).status == 200
    assert (await readiness(ss1))[0] == 200

    # (c) the signing certificate moves to hsm2: the key watch switches, the peer verifies hsm2's signature
    moved_to = await signing_cert(fed, ss1, two)
    await deactivate(one, sha256)
    await wait_for_condition(
        lambda: keys.cert_sha256_hex(ss1.context.signer.cert) == moved_to,  # type: ignore[union-attr]
        timeout=10, what="the key watch switches to hsm2's certificate",
    )
    assert ss1.device is ss1.devices["hsm2"]
    assert (await call(ss1, f"{PROBE}/e")).status == 200
    assert await last_request_cert(fed) == moved_to
    assert [t["usage"] for t in ss1.tokens()] == ["auth", "", "sign, witness"]
    reports = await ss1.certificates(with_ocsp=False)
    assert [r.sha256 for r in reports if r.in_use and r.usage == "sign"] == [moved_to]
    # now hsm1 is idle: its vanishing only warns, and exchanges go on
    moved = hsm_kit.remove(one)
    try:
        await wait_for_condition(lambda: not ss1.devices["hsm1"].available, timeout=10, what="hsm1 is gone")
        assert (await call(ss1, f"{PROBE}/f")).status == 200
        status, body = await readiness(ss1)
        assert status == 200 and "pkcs11:hsm1" in body["warnings"], body  # type: ignore[operator]
    finally:
        hsm_kit.restore(one, moved)
    await wait_for_condition(lambda: ss1.devices["hsm1"].available, timeout=10, what="hsm1 is back again")

    # (d) the admin API lists every device and generates a key on the one named; the web page shows each
    await ss1.admin_store.add_user("officer", PASSWORD, frozenset({"security-officer"}), now=ss1.clock())
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{ss1.admin_url}/api/v1/login", json={"username": "officer", "password": PASSWORD}) as r:
            auth = {"Authorization": f"Bearer {(await r.json())['token']}"}
        async with http.get(f"{ss1.admin_url}/api/v1/tokens", headers=auth) as r:
            listed = await r.json()
        validate(listed, ROUTES_BY_ID["listTokens"].response, where="listTokens")
        assert [(t["name"], t["state"], t["usage"]) for t in listed["tokens"]] == [
            ("software", "available", "auth"), ("hsm1", "available", ""), ("hsm2", "available", "sign, witness")]
        async with http.post(f"{ss1.admin_url}/api/v1/token/keys", headers=auth,
                             json={"usage": "sign", "device": "hsm1", "label": "next"}) as r:
            made = await r.json()
            assert r.status == 201, made
        async with http.post(f"{ss1.admin_url}/api/v1/token/keys", headers=auth,
                             json={"usage": "sign", "device": "hsm9"}) as r:
            refused = await r.json()
            assert r.status == 404, refused
        assert "no PKCS#11 device named 'hsm9' (devices: hsm1, hsm2)" in refused["message"]
    assert made["id"] in [k.id for k in (await ss1.devices["hsm1"].state()).keys]
    async with aiohttp.ClientSession(ss1.admin_url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get("/ui/login") as r:
            form_token = re.search(r'name="_csrf" value="([^"]*)"', await r.text())
        assert form_token is not None
        login = {"_csrf": form_token.group(1), "username": "officer", "password": PASSWORD, "next": "/ui/keys"}
        async with browser.post("/ui/login", data=login) as r:
            page = html.unescape(await r.text())
    assert r.status == 200 and "Tokens of this server: 3" in page, page[:2000]
    assert "Keys of PKCS#11 token hsm1: 2" in page and "Keys of PKCS#11 token hsm2: 2" in page, page
    assert "keys in use from it: sign, witness" in page

    # (e) no device has a signing certificate to use any more: signing moves to the software token's
    assert ss1.token is not None
    soft = model.select_cert(await ss1.token.state(), "sign", now=ss1.clock())
    assert soft is not None
    await deactivate(two, moved_to)
    await wait_for_condition(
        lambda: keys.cert_sha256_hex(ss1.context.signer.cert) == soft[1].sha256,  # type: ignore[union-attr]
        timeout=10, what="the key watch switches to the software token's certificate",
    )
    assert ss1.device is None
    assert (await call(ss1, f"{PROBE}/g")).status == 200
    assert await last_request_cert(fed) == soft[1].sha256
    assert [t["usage"] for t in ss1.tokens()] == ["auth, sign", "", "witness"]
