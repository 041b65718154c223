"""Certificate life cycle on running security servers whose keys live in software tokens.

- renewal of the signing certificates of both servers under traffic, with no failed exchange;
- a revoked signing certificate stops exchanges once the cached OCSP answer is too old, and a renewed
  certificate restores them without restart;
- replacement of an authentication certificate: the new one is used for TLS as soon as the global
  configuration registers it, the old one can then be deleted;
- expiry report and gauge.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from exchange_kit import PROBE, Probe, ShiftClock, call, ocsp_refreshed, probed_federation

from gateway.central import registry
from gateway.dev.demo import Federation
from gateway.identifiers import MemberId, SecurityServerId
from gateway.server.runtime import SecurityServer
from gateway.trust import keys


async def renew(fed: Federation, server: SecurityServer, usage: str) -> str:
    """What an operator does: new key in the token, CSR, certificate from the CA, import. Returns its fingerprint."""
    token = server.token
    assert token is not None and token.logged_in
    conf = server.globalconf.current
    assert conf is not None
    entry = await token.generate_key(usage, now=server.clock())  # type: ignore[arg-type]
    csr = await token.csr(entry.id, server_id=server.server_id)
    identity = server.server_id if usage == "auth" else server.server_id.owner
    cert = fed.ca.issue(csr, kind=usage, expected_identity=identity, now=server.clock())  # type: ignore[arg-type]
    imported = await token.import_cert(keys.cert_pem(cert).encode(), server_id=server.server_id,
                                       ca_for=conf.ca_for, now=server.clock())
    return imported.sha256


def sign_sha256(server: SecurityServer) -> str:
    assert server.context is not None
    return keys.cert_sha256_hex(server.context.signer.cert)


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Federation, ShiftClock, Probe]]:
    clock = ShiftClock()
    federation = probed_federation(tmp_path / "fed", clock=clock, key_store="token", adapters_at_probe=True)
    async with federation as (fed, probe):
        yield fed, clock, probe


async def test_servers_run_from_tokens_with_pin_files(world: tuple[Federation, ShiftClock, Probe]) -> None:
    fed, _clock, _probe = world
    for server in fed.servers.values():
        s = server.settings.server
        assert s.token_dir and s.token_pin_file
        assert Path(s.token_pin_file).stat().st_mode & 0o777 == 0o600
        assert not (Path(s.state_dir) / "sign.key").exists()  # no plain key file anywhere
        for pem in Path(s.token_dir, "keys").iterdir():
            assert b"ENCRYPTED PRIVATE KEY" in pem.read_bytes()
    assert (await call(fed.server("ss1"), f"{PROBE}/x")).status == 200


async def test_signing_renewal_under_traffic_fails_no_exchange(world: tuple[Federation, ShiftClock, Probe]) -> None:
    fed, _clock, probe = world
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    old = {code: sign_sha256(fed.server(code)) for code in ("ss1", "ss2")}
    statuses: list[int] = []
    switched, flowing = asyncio.Event(), asyncio.Event()

    async def traffic(worker: int) -> None:
        # bounded: runs until the switch is done and 20 more exchanges went through, at most 400 each
        after = 0
        for i in range(400):
            answer = await call(ss1, f"{PROBE}/w{worker}/{i}")
            statuses.append(answer.status)
            if len(statuses) >= 20:
                flowing.set()
            if switched.is_set():
                after += 1
                if after >= 20:
                    return

    workers = [asyncio.create_task(traffic(w)) for w in range(4)]
    try:
        await flowing.wait()  # traffic is flowing before anything changes
        for server in (ss1, ss2):
            assert server.token is not None
            new = await renew(fed, server, "sign")
            await server.token.activate(new)
            # the new certificate takes over at once: reload_keys switches it, unless the token watch, which
            # notices the token's files change, got there first (then reload_keys finds nothing to do)
            await server.reload_keys()
            assert sign_sha256(server) == new
            await server.token.deactivate(old[server.server_id.server_code])  # the old one is retired
            assert await server.reload_keys() is False
        switched.set()
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
    assert statuses and set(statuses) == {200}, [s for s in statuses if s != 200]
    assert len(statuses) >= 100
    for code in ("ss1", "ss2"):
        assert sign_sha256(fed.server(code)) != old[code]
    # the provider's last request and response were signed with the new certificates (stapled, logged)
    assert ss2.context is not None and len(probe.seen) == len(statuses)
    recs = [r.decode() for r in await ss2.messagelog.read(ss2.context.origin, limit=10_000)]
    last_req = next(r for r in reversed(recs) if r.kind == "request")
    last_resp = next(r for r in reversed(recs) if r.kind == "response")
    assert keys.cert_sha256_hex(keys.load_certificate(last_req.signing_cert)) == sign_sha256(ss1)
    assert keys.cert_sha256_hex(keys.load_certificate(last_resp.signing_cert)) == sign_sha256(ss2)


async def test_revoked_signing_certificate_is_refused_until_renewed(
    world: tuple[Federation, ShiftClock, Probe],
) -> None:
    fed, clock, probe = world
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    assert (await call(ss1, f"{PROBE}/warm")).status == 200
    assert ss2.context is not None and ss2.token is not None
    fed.ca.revoke(ss2.context.signer.cert.serial_number, reason="keyCompromise", now=clock())
    # the cached "good" answer still holds until it is older than ocsp_refresh_seconds ...
    assert (await call(ss1, f"{PROBE}/cached")).status == 200
    clock.advance(ss2.settings.server.ocsp_refresh_seconds + 1)
    await ocsp_refreshed(fed)  # the refresh runs in the background
    # ... then the provider cannot sign any more: its own OCSP answer says revoked
    answer = await call(ss1, f"{PROBE}/after", headers={"X-Road-Id": f"DEV-{uuid.uuid4()}"})
    answer.assert_error(500, "Server.ServerProxy.CertValidation", contains="revoked")
    assert [s.path_qs for s in probe.seen] == ["/warm", "/cached"]
    # a renewed certificate restores the exchange without restart
    new = await renew(fed, ss2, "sign")
    await ss2.token.activate(new)
    await ss2.reload_keys()  # switches, unless the token watch got there first
    assert sign_sha256(ss2) == new
    assert (await call(ss1, f"{PROBE}/renewed")).status == 200


async def test_auth_certificate_replacement_switches_tls_once_registered(
    world: tuple[Federation, ShiftClock, Probe],
) -> None:
    fed, _clock, _probe = world
    ss1 = fed.server("ss1")
    assert ss1.token is not None and ss1.context is not None
    old = keys.cert_sha256_hex(ss1.context.auth_cert)
    new = await renew(fed, ss1, "auth")
    await ss1.token.activate(new)
    # (a) not registered yet: the server keeps presenting the registered one
    assert await ss1.reload_keys() is False
    assert keys.cert_sha256_hex(ss1.context.auth_cert) == old
    # (b) registered and published: the next reload switches TLS, exchanges keep working
    _key, entry = (await ss1.token.state()).cert(new)
    await registry.add_auth_cert(fed.central.engine, ss1.server_id, entry.pem, instance="DEV")
    await fed.publish_and_refresh()
    await ss1.reload_keys()  # switches, unless the token watch or the new configuration's listener did first
    assert keys.cert_sha256_hex(ss1.context.auth_cert) == new
    await ss1.context.peers.close()  # drop pooled connections: the next handshake must use the new cert
    assert (await call(ss1, f"{PROBE}/new-auth")).status == 200
    # (c) the old one retired and deleted centrally: still working
    await ss1.token.deactivate(old)
    await registry.remove_auth_cert(fed.central.engine, ss1.server_id, old, instance="DEV")
    await fed.publish_and_refresh()
    assert await ss1.reload_keys() is False
    assert (await call(ss1, f"{PROBE}/old-gone")).status == 200


async def test_expiry_report_and_gauge(world: tuple[Federation, ShiftClock, Probe]) -> None:
    fed, _clock, _probe = world
    ss1 = fed.server("ss1")
    reports = await ss1.certificates()
    in_use = [r for r in reports if r.in_use]
    assert sorted(r.usage for r in in_use) == ["auth", "sign"]
    assert all(r.ocsp == "good" and r.days_left is not None and 700 < r.days_left <= 730 for r in in_use)
    assert {r.identity for r in in_use} == {str(SecurityServerId.parse("DEV/GOV/1001/ss1")),
                                           str(MemberId.parse("DEV/GOV/1001"))}
    sha = next(r.sha256 for r in in_use if r.usage == "sign")
    value = ss1.metrics.registry.get_sample_value("gateway_certificate_expires_in_seconds", {
        "server": "DEV/GOV/1001/ss1", "usage": "sign", "sha256": sha, "identity": "DEV/GOV/1001",
        "state": "active"})
    assert value is not None and 700 * 86400 < value <= 730 * 86400
