"""The message-log invariant of an exchange (docs/messagelog.md section 11), through both security servers:

- a request never reaches the service before the provider's record of it is durable;
- an answer never reaches the caller before that side's records of the exchange are durable: the consumer's
  request record commits while the request travels, and every answer, errors included, waits for it;
- a record that cannot be written fails the exchange closed: the caller gets ``LoggingFailed``, never the
  response nor the error the exchange would otherwise have answered.

And what the invariant costs: commits per exchange per side under concurrent load (the stores' WriterStats).
The provider's domain has two servers, ss2 and ss3; ss3 is stopped, so that a request pinned to it finds
nobody listening.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import pytest_asyncio
from exchange_kit import (
    CONSUMER,
    PROBE,
    Answer,
    FailingLog,
    GatedLog,
    Probe,
    call,
    database_urls,
    kinds,
    probed_federation,
    records,
    swapped_log,
)

from gateway.dev.demo import Federation, MemberSpec, ServerSpec, default_layout
from gateway.errors import TimestampingFailed
from gateway.identifiers import ServiceId, SubsystemId
from gateway.messagelog.record import LogRecord
from gateway.messagelog.store import Appended, MemoryMessageLogStore
from gateway.server.runtime import SecurityServer
from gateway.serverconf.access import AccessRule

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

DENIED = "DEV/GOV/1002/registry/invariant-denied"  # exists on ss2, granted to nobody
DOWN = "DEV/GOV/1002/registry/invariant-down"  # granted, at a port where nothing listens
LOAD = 128  # exchanges in the load
CONCURRENCY = 32  # of them in flight at once


def _layout() -> tuple[list[MemberSpec], list[ServerSpec]]:
    members, servers = default_layout()
    ss2 = servers[1]
    ss3 = ServerSpec(id=ss2.id.owner.server("ss3"), clients=ss2.clients, services=dict(ss2.services))
    return members, [*servers, ss3]


@dataclass
class World:
    fed: Federation
    ss1: SecurityServer
    ss2: SecurityServer
    probe: Probe


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: nothing listens there


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("invariant")
    async with (
        database_urls(request.param, tmp, ("central", "ss1", "ss2", "ss3")) as dbs,
        probed_federation(tmp / "fed", database_urls=dbs, layout=_layout()) as (fed, probe),
    ):
        ss2 = fed.server("ss2")
        await ss2.store.add_service(ServiceId.parse(DENIED), url=probe.url)
        await ss2.store.add_service(ServiceId.parse(DOWN), url=f"http://127.0.0.1:{_closed_port()}")
        await ss2.store.grant(AccessRule(subject=SubsystemId.parse(CONSUMER), service=ServiceId.parse(DOWN)))
        await ss2.reload_serverconf()
        await fed.server("ss3").stop()
        yield World(fed=fed, ss1=fed.server("ss1"), ss2=ss2, probe=probe)


class _Recording(GatedLog):
    """A gated log that also notes, for each record it is given, whether the gate was open by then."""

    def __init__(self, held_kind: str) -> None:
        super().__init__(held_kind)
        self.given: list[tuple[str, bool]] = []

    def _enqueue(self, record: LogRecord, encoded: bytes, leaf: bytes, **kw: Any) -> asyncio.Future[Appended]:
        self.given.append((record.kind, self.release.is_set()))
        return super()._enqueue(record, encoded, leaf, **kw)


async def test_the_request_travels_while_its_record_commits_and_the_answer_waits_for_it(world: World) -> None:
    message_id = f"DEV-travels-{uuid.uuid4()}"
    world.probe.release.clear()  # the probe's /slow holds the request at the service until released
    try:
        async with swapped_log(world.ss1, _Recording("request")) as gate:
            assert isinstance(gate, _Recording)
            exchange = asyncio.create_task(call(world.ss1, f"{PROBE}/slow", headers={"X-Road-Id": message_id}))
            # (1) The request is at the service, while the consumer's record of it is not yet committed:
            await asyncio.wait_for(world.probe.hanging.wait(), timeout=30)
            assert gate.holding.is_set()
            assert gate.records(world.ss1.context.origin) == []  # type: ignore[union-attr]
            # ... and the provider's record of it is durable (it was, before the service saw the request).
            assert kinds(await records(world.ss2, message_id=message_id)) == [("request", None)]
            assert not exchange.done()
            # (2) The service answers; the provider logs and sends its response; the consumer's answer still
            #     waits for the request's record: the response's record is not even given to the log yet.
            world.probe.release.set()
            gate.release.set()
            answer = await asyncio.wait_for(exchange, timeout=30)
            assert answer.status == 200, answer.body[:300]
            assert gate.given == [("request", False), ("response", True)]
            assert kinds(gate.records(world.ss1.context.origin)) == [  # type: ignore[union-attr]
                ("request", None), ("response", 200)]
    finally:
        world.probe.release.set()
        world.probe.hanging.clear()


class _Refusing:
    """A timestamping gate (the checkpointer's seam) that refuses every exchange, and says when it did."""

    def __init__(self) -> None:
        self.refused = asyncio.Event()

    def check_timestamping(self, now: datetime) -> None:
        self.refused.set()
        raise TimestampingFailed("the message log has not been timestamped (refused by the test)")


class _Noting(MemoryMessageLogStore):
    """The provider's log for a while: sets :attr:`answered` once it is given a response record (the provider's
    answer, signed, is on its way)."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = asyncio.Event()

    def _enqueue(self, record: LogRecord, encoded: bytes, leaf: bytes, **kw: Any) -> asyncio.Future[Appended]:
        if record.kind == "response":
            self.answered.set()
        return super()._enqueue(record, encoded, leaf, **kw)


_CASES = {
    "the response": (f"{PROBE}/x", {}, None),
    "a signed refusal": (f"{DENIED}/x", {}, "Server.ServerProxy.AccessDenied"),
    "a signed network error": (f"{DOWN}/x", {}, "Server.ServerProxy.NetworkError"),
    "an unsigned refusal": (f"{PROBE}/x", {}, "Server.ServerProxy.TimestampingFailed"),
    "an unreachable provider server": (f"{PROBE}/x", {"X-Road-Security-Server": "DEV/GOV/1002/ss3"},
                                       "Server.ClientProxy.NetworkError"),
}


@pytest.mark.parametrize(
    ("case", "late"),
    [(case, False) for case in _CASES]  # an unreachable server never answers: no later point to fail at
    + [(case, True) for case in _CASES if case != "an unreachable provider server"],
    ids=lambda v: {False: "failed at once", True: "failed after the provider answered"}.get(v, v),
)
async def test_an_unwritable_request_record_is_the_answer_whatever_else_happened(
    world: World, case: str, late: bool,
) -> None:
    # "At once": the write has failed before the request is sent, which stops the send. "After the provider
    # answered": the request travels, the provider answers (what it answers is the case), and only then
    # does the write fail; the answer waits for it either way.
    path, headers, expected = _CASES[case]
    assert world.ss2.context is not None
    gate = world.ss2.context.timestamping
    refusing = _Refusing()
    if case == "an unsigned refusal":
        world.ss2.context.timestamping = refusing
    try:
        # (1) With the consumer's log working, the exchange answers what it answers.
        plain = await call(world.ss1, path, headers=headers)
        if expected is None:
            assert plain.status == 200, plain.body[:300]
        else:
            assert plain.status >= 400 and plain.headers.get("X-Road-Error") == expected, plain.body[:300]
        # (2) With its request record unwritable, the same exchange answers the log's error instead.
        message_id = f"DEV-unwritable-{uuid.uuid4()}"
        async with swapped_log(world.ss2, _Noting()) as provider:
            assert isinstance(provider, _Noting)
            after = None
            if late:
                refusing.refused.clear()
                after = refusing.refused if case == "an unsigned refusal" else provider.answered
            async with swapped_log(world.ss1, FailingLog("request", "response", after=after)) as failing:
                answer = await call(world.ss1, path, headers={**headers, "X-Road-Id": message_id})
                answer.assert_error(500, "Server.ClientProxy.LoggingFailed", contains="No space left on device")
                assert failing.stats.failed_batches == 1 and failing.stats.batches == 0  # no response record tried
            reached = [r.kind for r in provider.records(world.ss2.context.origin)]
    finally:
        world.ss2.context.timestamping = gate
    assert b'"path": "/x"' not in answer.body  # never the service's answer
    if late and case != "an unsigned refusal":
        assert reached == ["request", "response"]  # the provider did its part: the request did travel
    if not late:
        assert reached == []  # known to have failed before the send: not sent


async def _load(ss1: SecurityServer) -> list[Answer]:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> Answer:
        async with semaphore:
            return await call(ss1, f"{PROBE}/load/{i}", headers={"X-Road-Id": f"DEV-load-{i}-{uuid.uuid4()}"})

    return list(await asyncio.gather(*(one(i) for i in range(LOAD))))


async def test_commits_per_exchange_per_side_under_concurrent_load(world: World) -> None:
    stores = {"consumer": world.ss1.messagelog, "provider": world.ss2.messagelog}
    before = {side: (s.stats.batches, s.stats.records, s.stats.failed_batches) for side, s in stores.items()}
    answers = await _load(world.ss1)
    assert [a.status for a in answers] == [200] * LOAD
    figures = {}
    for side, store in stores.items():
        batches = store.stats.batches - before[side][0]
        assert store.stats.records - before[side][1] == 2 * LOAD  # a request and a response per exchange
        assert store.stats.failed_batches == before[side][2]
        assert 1 <= batches <= 2 * LOAD
        figures[side] = batches / LOAD
    # Every answered exchange has both of its records on both sides.
    for server in (world.ss1, world.ss2):
        logged: dict[str, list[str]] = {}
        for r in await records(server):
            logged.setdefault(r.request_id, []).append(r.kind)
        for a in answers:
            assert logged[a.headers["X-Road-Request-Id"]] == ["request", "response"]
    print(f"commits per exchange, {LOAD} exchanges, {CONCURRENCY} at once: "
          + ", ".join(f"{side} {f:.2f}" for side, f in figures.items()))
