"""A security server started with an empty software token (no keys, no certificates): it comes up
uninitialised and is set up through its admin API, without restart (docs/operations.md, "Starting a new server").

- readiness is 503 with a failing ``keys`` check that names what is missing, on the ops port's ``/readyz``;
- an r1 request on the client-facing port is answered ``Server.ClientProxy.NotConfigured`` (HTTP 503);
- the server-to-server port refuses the TLS handshake (there is no authentication certificate to present);
- keys generated, CSRs signed by the federation's CA, certificates imported and activated through the admin
  API, the authentication certificate registered centrally: readiness passes and an exchange succeeds, with
  the certificates made through the API, in the same process.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from exchange_kit import PROBE, Probe, call, probed_federation, records
from waiting import wait_for_condition

from gateway.admin.roles import ROLES
from gateway.admin.routes import ROUTES_BY_ID
from gateway.central import registry
from gateway.dev.demo import Federation
from gateway.identifiers import SecurityServerId, ServiceId, SubsystemId
from gateway.server.runtime import SecurityServer
from gateway.serverconf.access import AccessRule
from gateway.settings import GlobalConfSettings, ServerSettings, Settings
from gateway.token.soft import SoftToken
from gateway.trust import keys

SS3 = SecurityServerId.parse("DEV/GOV/1003/ss3")
CLIENT3 = "DEV/GOV/1003/client3"
PIN = "ss3-token-pin-0001"
PASSWORD = "ss3 admin password"


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Federation, Probe]]:
    async with probed_federation(tmp_path / "fed", key_store="token", adapters_at_probe=True) as (fed, probe):
        ss2 = fed.server("ss2")
        await ss2.store.grant(AccessRule(subject=SubsystemId.parse(CLIENT3), service=ServiceId.parse(PROBE)))
        await ss2.reload_serverconf()
        yield fed, probe


async def _start_empty(fed: Federation, workdir: Path) -> SecurityServer:
    """ss3 as installed: `gateway token init` made its token, nothing else (no key, no certificate)."""
    state = workdir / "ss3"
    state.mkdir(mode=0o700)
    token = await SoftToken.init(state / "token", PIN)
    token.logout()
    pin_file = state / "token.pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    settings = Settings(
        central=fed.central.settings,
        server=ServerSettings(id=str(SS3), database_url=f"sqlite+aiosqlite:///{workdir / 'ss3.db'}",
                              state_dir=str(state), client_port=0, client_https_port=-1, server_port=0,
                              admin_port=0, ops_port=0, token_dir=str(state / "token"),
                              token_pin_file=str(pin_file)),
        globalconf=GlobalConfSettings(anchor=str(fed.anchor_path), cache_dir=str(state / "globalconf")),
    )
    server = SecurityServer(settings)
    await server.start()
    return server


class Admin:
    """ss3's admin REST API, called by operation id as a security officer."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url, self.bearer = http, url, ""

    async def call(self, operation_id: str, *, params: dict[str, str] | None = None, **kw: Any) -> Any:
        route = ROUTES_BY_ID[operation_id]
        headers = {"Authorization": f"Bearer {self.bearer}"} if self.bearer else {}
        async with self.http.request(route.method, self.url + route.path.format(**(params or {})),
                                     headers=headers, **kw) as resp:
            body = await resp.json() if resp.status != 204 else None
            assert resp.status == route.status, (operation_id, resp.status, body)
            return body


async def _key_through_the_api(admin: Admin, fed: Federation, usage: str) -> str:
    key = await admin.call("generateKey", json={"usage": usage, "label": f"ss3 {usage}"})
    csr_pem = (await admin.call("createCsr", params={"token_key_id": key["id"]}, json={"name": "Agency C"}))["csr"]
    from cryptography import x509

    csr = x509.load_pem_x509_csr(csr_pem.encode())
    # the one step outside the server: the CA signs
    cert = fed.ca.issue(csr, kind=usage, expected_identity=SS3 if usage == "auth" else SS3.owner,  # type: ignore[arg-type]
                        now=datetime.now(UTC))
    imported = await admin.call("importCertificate", json={"pem": keys.cert_pem(cert)})
    await admin.call("activateCertificate", params={"sha256": imported["sha256"]})
    return str(imported["sha256"])


async def _handshake(peer: SecurityServer, address: str) -> bytes | str:
    """A TLS handshake with ``address`` as ``peer``'s client proxy makes it (its authentication certificate,
    the CAs of the global configuration): the certificate the server presented (DER), or the error."""
    assert peer.context is not None
    host, port = address.rsplit(":", 1)
    try:
        _reader, writer = await asyncio.open_connection(host, int(port), ssl=peer.context.peer_ssl)
    except (ssl.SSLError, ConnectionError) as e:
        return f"{type(e).__name__}: {e}"
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert isinstance(der, bytes)
        return der
    finally:
        writer.close()


async def test_empty_token_starts_uninitialised_then_is_set_up_without_restart(
    world: tuple[Federation, Probe], tmp_path: Path,
) -> None:
    fed, probe = world
    central = fed.central.engine
    await registry.add_member(central, SS3.owner, name="Agency C", instance="DEV")
    await registry.add_subsystem(central, CLIENT3, instance="DEV")
    ss3 = await _start_empty(fed, tmp_path)
    try:
        assert ss3.health is not None and ss3.context is not None
        # (1) uninitialised: readiness names what is missing, on /readyz too
        missing = {c.name: c for c in await ss3.health.checks()}["keys"]
        assert not missing.ok
        assert "no active authentication certificate registered in the global configuration" in missing.detail
        assert f"no active signing certificate for member {SS3.owner}" in missing.detail
        async with aiohttp.ClientSession() as http, http.get(f"{ss3.ops_url}/readyz") as resp:
            assert resp.status == 503
            assert "no active signing certificate for member" in await resp.text()
        # (2) the client-facing port answers r1 with the precise fault; nothing reached the provider
        await ss3.store.add_client(SubsystemId.parse(CLIENT3), is_auth="none")
        await ss3.reload_serverconf()
        answer = await call(ss3, f"{PROBE}/early", client=CLIENT3)
        answer.assert_error(503, "Server.ClientProxy.NotConfigured", contains="no active signing certificate")
        assert await records(ss3) == []  # nothing signed, nothing in the message log
        # (3) the server-to-server port refuses the handshake
        refused = await _handshake(fed.server("ss1"), ss3.server_address)
        assert isinstance(refused, str) and refused.startswith(("SSLError", "ConnectionResetError")), refused
        # (4) set up through the admin API: keys, CSRs, certificates imported and activated
        await ss3.admin_store.add_user("sec", PASSWORD, frozenset(ROLES), now=datetime.now(UTC))
        async with aiohttp.ClientSession() as http:
            admin = Admin(http, ss3.admin_url)
            admin.bearer = (await admin.call("login", json={"username": "sec", "password": PASSWORD}))["token"]
            sign = await _key_through_the_api(admin, fed, "sign")
            # half-way: the signing key is active, the authentication certificate still missing
            assert ss3.context.not_configured is not None
            assert "signing" not in ss3.context.not_configured
            auth = await _key_through_the_api(admin, fed, "auth")
        assert ss3.context.not_configured is None
        assert keys.cert_sha256_hex(ss3.context.signer.cert) == sign
        assert keys.cert_sha256_hex(ss3.context.auth_cert) == auth
        # (5) registered centrally (what the registration officer's approval does), published, downloaded
        _key, entry = (await ss3.token.state()).cert(auth)  # type: ignore[union-attr]
        await registry.add_server(central, SS3, address=ss3.server_address, instance="DEV")
        await registry.add_auth_cert(central, SS3, entry.pem, instance="DEV")
        await registry.add_server_client(central, SS3, CLIENT3, instance="DEV")
        await fed.publish_and_refresh()
        await ss3.globalconf.refresh()
        await ss3.reload_keys()
        await ss3.refresh_ocsp()  # what the ops refresh does every few seconds: our certificates' OCSP answers
        checks = {c.name: c for c in await ss3.health.checks()}
        assert "keys" not in checks and checks["ocsp_signing"].ok and checks["ocsp_auth"].ok, checks
        # (6) the exchange succeeds, without restart
        ok = await call(ss3, f"{PROBE}/after-setup", client=CLIENT3)
        assert ok.status == 200, ok.body[:300]
        assert [s.path_qs for s in probe.seen] == ["/after-setup"]
    finally:
        await ss3.stop()


async def test_keys_activated_by_another_process_are_picked_up_by_the_token_watch(
    world: tuple[Federation, Probe], tmp_path: Path,
) -> None:
    """`gateway token` in another shell (here another SoftToken on the same directory): no admin API call; the
    token watch reloads the keys within serverconf_reload_seconds, and the server-to-server port then presents
    the new authentication certificate."""
    fed, _probe = world
    ss3 = await _start_empty(fed, tmp_path)
    try:
        assert ss3.context is not None and ss3.token is not None
        assert (await ss3.token.state()).keys == ()
        conf = ss3.globalconf.current
        assert conf is not None
        other = SoftToken(ss3.token.dir)
        await other.login(PIN, now=datetime.now(UTC))
        made = {}
        for usage, identity in (("auth", SS3), ("sign", SS3.owner)):
            entry = await other.generate_key(usage, now=datetime.now(UTC))  # type: ignore[arg-type]
            csr = await other.csr(entry.id, server_id=SS3, name="Agency C")
            cert = fed.ca.issue(csr, kind=usage, expected_identity=identity, now=datetime.now(UTC))  # type: ignore[arg-type]
            imported = await other.import_cert(keys.cert_pem(cert).encode(), server_id=SS3, ca_for=conf.ca_for,
                                               now=datetime.now(UTC))
            await other.activate(imported.sha256)
            made[usage] = cert
        other.logout()
        await wait_for_condition(lambda: ss3.context is not None and ss3.context.not_configured is None,
                                 timeout=30, what="the token watch reloads the keys activated in another process")
        assert ss3.context.signer.cert == made["sign"] and ss3.context.auth_cert == made["auth"]
        presented = await _handshake(fed.server("ss1"), ss3.server_address)
        assert presented == made["auth"].public_bytes(serialization.Encoding.DER), presented
    finally:
        await ss3.stop()
