"""Failures between and behind the security servers (issue item 8): the service down or silent, an expired
global configuration, a message log that cannot be written, a response too large.

Every test asserts the status, the X-Road error type (header and JSON body), what each message log holds
and whether anything reached the service.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from exchange_kit import (
    CONSUMER,
    PROBE,
    Answer,
    Probe,
    ShiftClock,
    auth_ssl,
    call,
    craft_request,
    database_urls,
    kinds,
    ocsp_for,
    probed_federation,
    records,
    send_to_server_port,
    signer_of,
)

from gateway.dev.demo import Federation
from gateway.identifiers import ServiceId, SubsystemId
from gateway.messagelog.store import MemoryMessageLogStore, PendingRecord
from gateway.proxy.common import BodyBudget
from gateway.proxy.peers import PeerPool
from gateway.server.runtime import SecurityServer
from gateway.serverconf.access import AccessRule

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@dataclass
class World:
    fed: Federation
    ss1: SecurityServer
    ss2: SecurityServer
    probe: Probe

    async def service(self, code: str, url: str, *, timeout_seconds: float = 60.0) -> ServiceId:
        """A service of ss2 at ``url``, granted to the consumer, in use now."""
        service = ServiceId.parse(f"DEV/GOV/1002/registry/{code}")
        await self.ss2.store.add_service(service, url=url, timeout_seconds=timeout_seconds)
        await self.ss2.store.grant(AccessRule(subject=SubsystemId.parse(CONSUMER), service=service))
        await self.ss2.reload_serverconf()
        return service


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """The federation, its servers' databases on SQLite and then on PostgreSQL."""
    tmp = tmp_path_factory.mktemp("failures")
    async with (
        database_urls(request.param, tmp, ("central", "ss1", "ss2")) as dbs,
        probed_federation(tmp / "fed", database_urls=dbs) as (fed, probe),
    ):
        yield World(fed=fed, ss1=fed.server("ss1"), ss2=fed.server("ss2"), probe=probe)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: nothing listens there


def _seen(probe: Probe, message_id: str) -> int:
    return sum(s.headers.get("X-Road-Id") == message_id for s in probe.seen)


# ---------------------------------------------------------------------------------------------------------
# The service behind the provider
# ---------------------------------------------------------------------------------------------------------


async def test_service_down_is_a_signed_network_error_logged_on_both_sides(world: World) -> None:
    service = await world.service("down", f"http://127.0.0.1:{_closed_port()}")
    message_id = f"DEV-down-{uuid.uuid4()}"
    answer = await call(world.ss1, f"{service}/x", headers={"X-Road-Id": message_id})
    answer.assert_error(500, "Server.ServerProxy.NetworkError", contains=f"service {service} cannot be reached")
    for server in (world.ss1, world.ss2):
        recs = await records(server, message_id=message_id)
        assert kinds(recs) == [("request", None), ("response", 500)]
        assert b"Server.ServerProxy.NetworkError" in (recs[1].body or b"")


async def test_silent_service_times_out_as_a_network_error(world: World) -> None:
    service = await world.service("slow", f"{world.probe.url}/slow", timeout_seconds=1.0)
    message_id = f"DEV-slow-{uuid.uuid4()}"
    try:
        answer = await call(world.ss1, f"{service}/x", headers={"X-Road-Id": message_id})
    finally:
        world.probe.release.set()  # let the hanging handler finish
    answer.assert_error(500, "Server.ServerProxy.NetworkError", contains="did not answer within 1 s")
    assert _seen(world.probe, message_id) == 1  # it did reach the service, which never answered
    for server in (world.ss1, world.ss2):
        assert kinds(await records(server, message_id=message_id)) == [("request", None), ("response", 500)]


async def test_oversized_service_response_is_refused(world: World) -> None:
    limit = world.ss2.settings.server.max_body_bytes
    service = await world.service("big", f"{world.probe.url}/big/{limit + 1}")
    message_id = f"DEV-big-{uuid.uuid4()}"
    answer = await call(world.ss1, f"{service}/x", headers={"X-Road-Id": message_id})
    answer.assert_error(500, "Server.ServerProxy.ServiceFailed", contains=f"larger than the maximum of {limit} bytes")
    assert _seen(world.probe, message_id) == 1
    for server in (world.ss1, world.ss2):
        recs = await records(server, message_id=message_id)
        assert kinds(recs) == [("request", None), ("response", 500)]
        assert len(recs[1].body or b"") < 1000  # the error was logged, not the oversized body


async def test_provider_response_over_the_consumers_limit_is_refused(world: World) -> None:
    # the provider lets a response pass that the consumer's own limit refuses: its peer pool stops reading it
    limit = 4096
    service = await world.service("bigger", f"{world.probe.url}/big/{limit + 1}")
    ctx = world.ss1.context
    small = PeerPool(ctx.peer_ssl, world.ss1._check_provider, max_body_bytes=limit)
    saved, ctx.peers = ctx.peers, small
    message_id = f"DEV-bigger-{uuid.uuid4()}"
    try:
        answer = await call(world.ss1, f"{service}/x", headers={"X-Road-Id": message_id})
    finally:
        ctx.peers = saved
        await small.close()
    answer.assert_error(500, "Server.ClientProxy.IOError",
                        contains=f"the provider's response is larger than the maximum of {limit} bytes")
    assert _seen(world.probe, message_id) == 1
    # the provider answered and logged it; the consumer logged the request and refused what came back
    assert kinds(await records(world.ss2, message_id=message_id)) == [("request", None), ("response", 200)]
    assert kinds(await records(world.ss1, message_id=message_id)) == [("request", None)]


# ---------------------------------------------------------------------------------------------------------
# Bodies held in memory: one budget per security server, over all exchanges in progress
# ---------------------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def restore_budgets(world: World) -> AsyncIterator[None]:
    saved = {s: s.context.bodies for s in (world.ss1, world.ss2) if s.context is not None}
    try:
        yield
    finally:
        world.probe.release.set()
        for server, budget in saved.items():
            assert server.context is not None
            server.context.bodies = budget


async def _hold_one_exchange(world: World, service: ServiceId, body: bytes) -> asyncio.Task[Answer]:
    """An exchange with ``body`` that hangs in the service (so both servers hold its body) until released."""
    world.probe.release.clear()
    world.probe.hanging.clear()
    held = asyncio.create_task(call(world.ss1, f"{service}/held", method="POST", data=body,
                                    headers={"X-Road-Id": f"DEV-held-{uuid.uuid4()}"}))
    await world.probe.hanging.wait()
    return held


@pytest.mark.parametrize("side", ["ss1", "ss2"])
@pytest.mark.usefixtures("restore_budgets")
async def test_bodies_beyond_the_servers_budget_are_refused_until_it_frees(world: World, side: str) -> None:
    assert world.ss1.context is not None and world.ss2.context is not None
    body, larger = b"b" * 40_000, b"l" * 50_000
    # Room for one exchange's request body and its answer (the probe echoes the body) on the chosen server,
    # not for that body and a larger one at once.
    budget = BodyBudget(85_000)
    (world.ss1 if side == "ss1" else world.ss2).context.bodies = budget  # type: ignore[union-attr]
    service = await world.service(f"slow-budget-{side}", f"{world.probe.url}/slow")
    held = await _hold_one_exchange(world, service, body)
    assert budget.used == len(body)
    message_id = f"DEV-over-{uuid.uuid4()}"
    answer = await call(world.ss1, f"{service}/second", method="POST", data=larger,
                        headers={"X-Road-Id": message_id})
    proxy = "ClientProxy" if side == "ss1" else "ServerProxy"
    answer.assert_error(500, f"Server.{proxy}.Overloaded", contains="max_inflight_body_bytes")
    assert _seen(world.probe, message_id) == 0  # refused before it reached the service
    if side == "ss1":  # refused before anything was signed, logged or sent
        assert await records(world.ss1, message_id=message_id) == []
    else:  # ss2 refused it before verifying more than the headers: the consumer's log has the request only
        assert kinds(await records(world.ss1, message_id=message_id)) == [("request", None)]
        assert await records(world.ss2, message_id=message_id) == []
    # The held exchange completes; everything it held is given back, so the next one passes.
    world.probe.release.set()
    first = await held
    assert first.status == 200, first.body[:300]
    assert budget.used == 0
    again = await call(world.ss1, f"{PROBE}/after", method="POST", data=body)
    assert again.status == 200, again.body[:300]
    assert budget.used == 0


# ---------------------------------------------------------------------------------------------------------
# The message log fails closed
# ---------------------------------------------------------------------------------------------------------


class _FailingOn(MemoryMessageLogStore):
    """An in-memory log whose commits fail for records of the given kinds."""

    def __init__(self, *fail_kinds: str) -> None:
        super().__init__()
        self.fail_kinds = set(fail_kinds)

    async def _write_batch(self, batch: Sequence[PendingRecord]) -> list[int]:
        if any(p.record.kind in self.fail_kinds for p in batch):
            raise OSError(28, "No space left on device")
        return await super()._write_batch(batch)


async def _with_log(server: SecurityServer, store: MemoryMessageLogStore) -> MemoryMessageLogStore:
    assert server.context is not None
    server.context.messagelog = store
    return store


@pytest_asyncio.fixture(loop_scope="module")
async def restore_logs(world: World) -> AsyncIterator[None]:
    saved = {s: s.context.messagelog for s in (world.ss1, world.ss2) if s.context is not None}
    try:
        yield
    finally:
        for server, store in saved.items():
            assert server.context is not None
            failing = server.context.messagelog
            server.context.messagelog = store
            if failing is not store:
                await failing.close()


@pytest.mark.usefixtures("restore_logs")
async def test_consumer_log_unwritable_the_client_gets_the_log_error_not_the_response(world: World) -> None:
    # The consumer's request record commits while the request travels (docs/messagelog.md section 11) and the
    # answer waits for it: its write failed, so that is the answer. (A write known to have failed before the
    # send, as here, also stops the send; tests/integration/test_exchange_log_invariant.py has the late ones.)
    failing = await _with_log(world.ss1, _FailingOn("request", "response"))
    message_id = f"DEV-nolog-{uuid.uuid4()}"
    answer = await call(world.ss1, f"{PROBE}/x", headers={"X-Road-Id": message_id})
    answer.assert_error(500, "Server.ClientProxy.LoggingFailed", contains="No space left on device")
    assert b'"path": "/x"' not in answer.body  # the service's answer is withheld
    assert failing.records(world.ss1.context.origin) == []  # type: ignore[union-attr]
    assert failing.stats.failed_batches == 1  # the request's; no response record was even tried
    # whatever reached the service, the provider logged first
    provider = [r for r in await records(world.ss2, message_id=message_id) if r.kind == "request"]
    assert _seen(world.probe, message_id) == len(provider)


@pytest.mark.usefixtures("restore_logs")
async def test_provider_log_unwritable_nothing_reaches_the_service(world: World) -> None:
    failing = await _with_log(world.ss2, _FailingOn("request", "response"))
    message_id = f"DEV-nolog-provider-{uuid.uuid4()}"
    answer = await call(world.ss1, f"{PROBE}/x", headers={"X-Road-Id": message_id})
    answer.assert_error(500, "Server.ServerProxy.LoggingFailed", contains="No space left on device")
    assert failing.records(world.ss2.context.origin) == []  # type: ignore[union-attr]
    assert _seen(world.probe, message_id) == 0
    # the consumer logged its signed request, and no response: none was accepted
    assert kinds(await records(world.ss1, message_id=message_id)) == [("request", None)]


@pytest.mark.usefixtures("restore_logs")
async def test_consumer_cannot_log_the_response_so_the_client_gets_none(world: World) -> None:
    failing = await _with_log(world.ss1, _FailingOn("response"))
    message_id = f"DEV-noresplog-{uuid.uuid4()}"
    answer = await call(world.ss1, f"{PROBE}/x", headers={"X-Road-Id": message_id})
    answer.assert_error(500, "Server.ClientProxy.LoggingFailed", contains="No space left on device")
    assert b'"path": "/x"' not in answer.body  # the service's answer is withheld: it could not be logged
    assert kinds(failing.records(world.ss1.context.origin)) == [("request", None)]  # type: ignore[union-attr]
    # the provider did its part and logged it: the two logs show where the exchange stopped
    assert kinds(await records(world.ss2, message_id=message_id)) == [("request", None), ("response", 200)]
    assert _seen(world.probe, message_id) == 1


@pytest.mark.usefixtures("restore_logs")
async def test_provider_cannot_log_the_response_so_the_consumer_gets_none(world: World) -> None:
    failing = await _with_log(world.ss2, _FailingOn("response"))
    message_id = f"DEV-noresplog-provider-{uuid.uuid4()}"
    answer = await call(world.ss1, f"{PROBE}/x", headers={"X-Road-Id": message_id})
    answer.assert_error(500, "Server.ServerProxy.LoggingFailed", contains="No space left on device")
    assert b'"path": "/x"' not in answer.body
    assert _seen(world.probe, message_id) == 1
    assert kinds(failing.records(world.ss2.context.origin)) == [("request", None)]  # type: ignore[union-attr]
    assert kinds(await records(world.ss1, message_id=message_id)) == [("request", None)]


# ---------------------------------------------------------------------------------------------------------
# An expired global configuration stops the exchange on both sides (own federation: it moves the clock)
# ---------------------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def clocked(tmp_path: Path) -> AsyncIterator[tuple[Federation, ShiftClock, Probe]]:
    clock = ShiftClock()
    async with probed_federation(tmp_path / "fed", clock=clock) as (fed, probe):
        yield fed, clock, probe


async def test_expired_global_configuration_stops_exchange_until_a_fresh_one_arrives(
    clocked: tuple[Federation, ShiftClock, Probe],
) -> None:
    fed, clock, probe = clocked
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    assert (await call(ss1, f"{PROBE}/before")).status == 200
    clock.advance(3600)  # the configuration (valid 10 minutes) expired an hour ago; nobody downloaded a new one
    message_id = f"DEV-outdated-{uuid.uuid4()}"
    answer = await call(ss1, f"{PROBE}/x", headers={"X-Road-Id": message_id})
    answer.assert_error(500, "Server.ClientProxy.OutdatedGlobalConf", contains="expired")
    assert await records(ss1, message_id=message_id) == []
    # the provider refuses too, whatever a peer sends it
    signer = signer_of(ss1)
    crafted = craft_request(signer=signer, ocsp=ocsp_for(fed.ca, signer.cert, now=clock()), service=PROBE,
                            created=int(clock().timestamp()))
    direct = await send_to_server_port(ss2.server_address, auth_ssl(ss1, fed.ca), crafted)
    direct.assert_error(500, "Server.ServerProxy.OutdatedGlobalConf", contains="expired")
    assert await records(ss2, request_id=crafted.request_id) == []
    assert [s.path_qs for s in probe.seen] == ["/before"]
    # a fresh configuration from the central server restores the exchange
    await fed.publish_and_refresh()
    again = await call(ss1, f"{PROBE}/after")
    assert again.status == 200, again.body
    assert [s.path_qs for s in probe.seen] == ["/before", "/after"]
    assert datetime.now(UTC) < clock()


async def test_ocsp_responder_down_exchange_goes_on_while_cached_responses_are_fresh(
    clocked: tuple[Federation, ShiftClock, Probe],
) -> None:
    fed, clock, probe = clocked
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    assert (await call(ss1, f"{PROBE}/before")).status == 200
    await fed.pki.close()  # the CA's OCSP responder is gone
    clock.advance(ss1.settings.server.ocsp_refresh_seconds + 1)  # every re-fetch now fails
    assert (await call(ss1, f"{PROBE}/cached")).status == 200  # the cached responses are still fresh (1 h)
    clock.advance(3600)
    await fed.publish_and_refresh()  # the global configuration stays current; only OCSP is stale
    message_id = f"DEV-ocsp-stale-{uuid.uuid4()}"
    answer = await call(ss1, f"{PROBE}/stale", headers={"X-Road-Id": message_id})
    answer.assert_error(500, "Server.ClientProxy.CertValidation", contains="no fresh OCSP response")
    assert [s.path_qs for s in probe.seen] == ["/before", "/cached"]
    assert await records(ss1, message_id=message_id) == []
    assert await records(ss2, message_id=message_id) == []
