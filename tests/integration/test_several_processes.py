"""Two processes of one security server on one database: workers on SQLite, nodes on PostgreSQL.

The provider's server ss2 runs twice, as two :class:`SecurityServer` objects on the same database, keys and
settings but their own ports, log origins, replay caches and serverconf snapshots (what separates two worker
processes or two nodes): ``DEV/GOV/1002/ss2`` and ``DEV/GOV/1002/ss2/1`` (SQLite, the second worker of the
node) or ``DEV/GOV/1002/ss2/node2`` (PostgreSQL, a second node). Requests are crafted and signed with the
consumer server's real keys and sent over mutual TLS to either one's server port.

- A replayed request is refused by the other process, with the fault the in-process cache raises, and nothing
  of it is logged or reaches the service; it is logged once for the server.
- An access-right change made through one process's serverconf reaches the other within
  ``serverconf_reload_seconds``, without anybody telling it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from exchange_kit import (
    CONSUMER,
    PROBE,
    Answer,
    Crafted,
    Probe,
    auth_ssl,
    craft_request,
    database_urls,
    kinds,
    probed_federation,
    records,
    send_to_server_port,
    signer_of,
)
from exchange_kit import ocsp_for as ocsp_of
from waiting import wait_for_condition

from gateway.dev.demo import Federation
from gateway.errors import AccessDenied
from gateway.identifiers import ServiceId, SubsystemId
from gateway.proxy import tls
from gateway.server.runtime import SecurityServer
from gateway.serverconf.access import AccessRule
from gateway.trust import keys

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

RELOAD_SECONDS = 0.2  # [server] serverconf_reload_seconds of both processes here
BOUND = 30.0  # seconds a change may take to reach the other process here (a loaded machine; nominally 0.2 s)


@dataclass
class Pair:
    fed: Federation
    probe: Probe
    ss1: SecurityServer
    a: SecurityServer  # ss2, the first process
    b: SecurityServer  # ss2 again: the second worker (SQLite) or the second node (PostgreSQL)
    backend: str

    def crafted(self, **kw: object) -> Crafted:
        signer = signer_of(self.ss1)
        kw.setdefault("service", PROBE)
        return craft_request(signer=signer, ocsp=ocsp_of(self.fed.ca, signer.cert, now=datetime.now(UTC)),
                             **kw)  # type: ignore[arg-type]  # craft_request's keywords, passed through

    async def send(self, to: SecurityServer, crafted: Crafted) -> Answer:
        return await send_to_server_port(to.server_address, auth_ssl(self.ss1, self.fed.ca), crafted)

    def saw(self, request_id: str) -> int:
        return sum(s.headers.get("X-Road-Request-Id") == request_id for s in self.probe.seen)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(f"pair-{backend}")
    async with database_urls(backend, tmp, ["ss2"]) as dbs, probed_federation(
        tmp / "fed", database_urls=dbs, server_overrides={"serverconf_reload_seconds": RELOAD_SECONDS},
    ) as (fed, probe):
        a = fed.server("ss2")
        s = a.settings.server
        second = dataclasses.replace(
            s, client_port=0, client_https_port=-1, server_port=0, admin_port=-1,
            **({"workers": 2} if backend == "sqlite" else {"node": "node2"}),
        )
        b = SecurityServer(dataclasses.replace(a.settings, server=second), clock=a.clock,
                           worker=1 if backend == "sqlite" else 0)
        await b.start()
        try:
            assert b.origin == ("DEV/GOV/1002/ss2/1" if backend == "sqlite" else "DEV/GOV/1002/ss2/node2")
            assert a.origin == "DEV/GOV/1002/ss2"
            yield Pair(fed=fed, probe=probe, ss1=fed.server("ss1"), a=a, b=b, backend=backend)
        finally:
            await b.stop()


async def test_each_process_logs_under_its_own_origin(pair: Pair) -> None:
    for to in (pair.a, pair.b):
        crafted = pair.crafted(method="POST", service_path="/x", body=b"{}")
        answer = await pair.send(to, crafted)
        assert answer.status == 200, answer.body
        assert kinds(await records(to, request_id=crafted.request_id)) == [("request", None), ("response", 200)]
        other = pair.b if to is pair.a else pair.a
        assert await records(other, request_id=crafted.request_id) == []


@pytest.mark.parametrize("first", ["a", "b"])
async def test_a_replay_is_refused_by_the_other_process(pair: Pair, first: str) -> None:
    one, other = (pair.a, pair.b) if first == "a" else (pair.b, pair.a)
    crafted = pair.crafted(method="POST", service_path="/transfer", body=b'{"amount": 100}')
    assert (await pair.send(one, crafted)).status == 200
    # byte for byte the same request, to the other process: its own replay cache has never seen it
    again = await pair.send(other, crafted)
    again.assert_error(500, "Server.ServerProxy.ReplayedRequest", contains="was already received")
    # the same request id signed afresh
    resigned = pair.crafted(method="POST", service_path="/transfer", body=b'{"amount": 100}',
                            request_id=crafted.request_id)
    (await pair.send(other, resigned)).assert_error(500, "Server.ServerProxy.ReplayedRequest", contains="already")
    # and back to the first process: its cache refuses it as before
    (await pair.send(one, resigned)).assert_error(500, "Server.ServerProxy.ReplayedRequest", contains="already")
    # logged once for the server, by the process that accepted it; the service saw it once
    assert kinds(await records(one, request_id=crafted.request_id)) == [("request", None), ("response", 200)]
    assert await records(other, request_id=crafted.request_id) == []
    assert pair.saw(crafted.request_id) == 1


async def test_requests_in_flight_with_a_replay_among_them(pair: Pair) -> None:
    """Several exchanges at once on the other process, one of them a replay: only the replay fails (the others
    share its group commit)."""
    import asyncio

    replayed = pair.crafted(method="POST", service_path="/r", body=b"{}")
    assert (await pair.send(pair.a, replayed)).status == 200
    fresh = [pair.crafted(method="POST", service_path=f"/f{i}", body=b"{}") for i in range(6)]
    answers = await asyncio.gather(*(pair.send(pair.b, c) for c in [*fresh[:3], replayed, *fresh[3:]]))
    assert [a.status for a in answers] == [200, 200, 200, 500, 200, 200, 200]
    answers[3].assert_error(500, "Server.ServerProxy.ReplayedRequest", contains="was already received")
    for c in fresh:
        assert kinds(await records(pair.b, request_id=c.request_id)) == [("request", None), ("response", 200)]


async def test_access_change_through_one_process_reaches_the_other(pair: Pair) -> None:
    service = ServiceId.parse(f"DEV/GOV/1002/registry/granted-{uuid.uuid4().hex[:8]}")
    rule = AccessRule(subject=SubsystemId.parse(CONSUMER), service=service)
    consumer = SubsystemId.parse(CONSUMER)

    def allowed(server: SecurityServer) -> bool:
        assert server.context is not None
        snapshot = server.context.snapshot
        if service not in snapshot.services:
            return False
        try:
            snapshot.policy.check(consumer, service, "GET", "/", groups=server.context.groups(server.context.conf()))
        except AccessDenied:
            return False
        return True

    # (1) a new service and its right, through process a's store (as its admin API or `gateway serverconf` do)
    await pair.a.store.add_service(service, url=pair.probe.url)
    await pair.a.store.grant(rule)
    await wait_for_condition(lambda: allowed(pair.b), timeout=BOUND, what="process b sees the new right")
    crafted = pair.crafted(service=str(service))
    assert (await pair.send(pair.b, crafted)).status == 200
    # (2) revoked through a: b refuses within the bound, with the fault of a refused right
    await pair.a.store.revoke(rule)
    await wait_for_condition(lambda: not allowed(pair.b), timeout=BOUND, what="process b sees the revocation")
    (await pair.send(pair.b, pair.crafted(service=str(service)))).assert_error(
        500, "Server.ServerProxy.AccessDenied")


async def test_a_key_change_through_one_worker_reaches_the_other(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keys in a software token shared by two workers of ss2: a new signing certificate activated through
    worker 0 (as its admin API does: activate, then SecurityServer.keys_changed) is used by worker 1 within the
    bound, and worker 1 signs its answers with it."""
    from test_cert_lifecycle import renew, sign_sha256

    tmp = tmp_path_factory.mktemp("keys")
    async with probed_federation(tmp / "fed", key_store="token", adapters_at_probe=True,
                                 server_overrides={"serverconf_reload_seconds": RELOAD_SECONDS}) as (fed, _probe):
        a = fed.server("ss2")
        second = dataclasses.replace(a.settings.server, client_port=0, client_https_port=-1, server_port=0,
                                     admin_port=-1, workers=2)
        b = SecurityServer(dataclasses.replace(a.settings, server=second), clock=a.clock, worker=1)
        await b.start()
        try:
            old = sign_sha256(b)
            assert a.token is not None
            new = await renew(fed, a, "sign")
            await a.token.activate(new)
            assert await a.keys_changed() is True and sign_sha256(a) == new
            await wait_for_condition(lambda: sign_sha256(b) == new, timeout=BOUND,
                                     what="worker 1 signs with the certificate activated through worker 0")
            # an exchange through worker 1, as ss1 sends it (ss1's keys are in its token too)
            ss1 = fed.server("ss1")
            assert ss1.token is not None
            now = datetime.now(UTC)
            signer = await ss1.token.signer(now=now)
            crafted = craft_request(signer=signer, ocsp=ocsp_of(fed.ca, signer.cert, now=now), service=PROBE,
                                    method="POST", service_path="/k", body=b"{}")
            auth = await ss1.token.tls_material(now=now, registered=None)
            ssl_context = tls.peer_client_context(str(auth.cert_path), str(auth.key_path), [fed.ca.ca_cert],
                                                  password=auth.password)
            assert (await send_to_server_port(b.server_address, ssl_context, crafted)).status == 200
            [_, response] = await records(b, request_id=crafted.request_id)
            assert keys.cert_sha256_hex(keys.load_certificate(response.signing_cert)) == new != old
        finally:
            await b.stop()


async def test_a_process_that_lost_its_origin_refuses_exchanges(pair: Pair) -> None:
    """PostgreSQL: node2's claim on its origin is lost (its lock's session ended) and another process holds the
    origin: node2 refuses exchanges with LoggingFailed, logging nothing, until it takes its origin back."""
    if pair.backend != "postgresql":
        pytest.skip("a claim on SQLite is a flock, held until the process ends")
    from test_origin_lease import _terminate_lock_holder

    from gateway.server.lease import OriginLease

    assert pair.b.lease is not None
    await _terminate_lock_holder(pair.b.settings.server.database_url, pair.b.origin)
    intruder = await OriginLease.acquire(pair.b.engine, pair.b.origin, wait_seconds=0)
    try:
        await pair.b.lease.check_now()
        crafted = pair.crafted(method="POST", service_path="/lost", body=b"{}")
        (await pair.send(pair.b, crafted)).assert_error(500, "Server.ServerProxy.LoggingFailed",
                                                        contains=f"does not hold log origin {pair.b.origin}")
        assert await records(pair.b, request_id=crafted.request_id) == [] and pair.saw(crafted.request_id) == 0
    finally:
        await intruder.release()
    await pair.b.lease.check_now()
    assert (await pair.send(pair.b, pair.crafted(method="POST", service_path="/back", body=b"{}"))).status == 200
