"""The "database unreachable" drill (real sockets, TLS, PostgreSQL behind a TCP proxy the test runs): under a
light steady load, the proxy is cut (every connection reset, new ones refused) and then hangs (connections
open, nothing carried); each time, exchanges fail closed with ``LoggingFailed`` within a bound, ``/readyz``
goes 503 naming the database; when the proxy forwards again the exchanges succeed by themselves, and every
exchange answered 200 has its records in both servers' logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import PG_DSN
from drill_kit import TcpForwarder
from exchange_kit import PROBE, call, database_urls, probed_federation, records
from ops_kit import readyz, samples, scrape, value
from sqlalchemy.engine.url import make_url
from waiting import wait_for_condition

from gateway.errors import DatabaseError
from gateway.server.runtime import SecurityServer
from gateway.serverconf.store import ServerConfStore
from gateway.storage.db import make_engine

pytestmark = [pytest.mark.integration]

DB_TIMEOUT = 3.0  # seconds: [server] database_connect_timeout_seconds and database_statement_timeout_seconds
EXCHANGE_BOUND = 3 * DB_TIMEOUT + 10  # seconds: an exchange waits for at most a connect and a commit, each bounded
PACE = 0.02  # seconds between two exchanges of one caller: a light load, not a flood of refusals
OUTAGE = 60.0  # seconds within which each phase of the drill must show what it waits for


@dataclass
class Load:
    """Two callers sending exchanges through ss1 back to back (paced), each bounded in time."""

    ss1: SecurityServer
    answers: list[tuple[str, int, str | None]] = field(default_factory=list)  # message id, status, fault type
    hung: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)  # cleared: the callers pause after their exchange
    in_flight: int = 0

    async def _caller(self) -> None:
        while not self.stop.is_set():
            await self.go.wait()
            message_id = f"DEV-drill-{uuid.uuid4()}"
            self.in_flight += 1
            try:
                async with asyncio.timeout(EXCHANGE_BOUND):
                    answer = await call(self.ss1, f"{PROBE}/drill", headers={"X-Road-Id": message_id})
            except TimeoutError:
                self.hung.append(message_id)
                continue
            finally:
                self.in_flight -= 1
            fault = answer.headers.get("X-Road-Error")
            if answer.status != 200:
                assert answer.json["type"] == fault, answer.body[:300]
            self.answers.append((message_id, answer.status, fault))
            await asyncio.sleep(PACE)  # pacing of the load, not a synchronisation

    def since(self, mark: int) -> list[tuple[str, int, str | None]]:
        return self.answers[mark:]

    def count(self, mark: int, *, ok: bool) -> int:
        return sum((s == 200) == ok for _, s, _ in self.since(mark))


@contextlib.asynccontextmanager
async def running(load: Load) -> AsyncIterator[Load]:
    load.go.set()
    tasks = [asyncio.create_task(load._caller()) for _ in range(2)]
    try:
        yield load
    finally:
        load.stop.set()
        load.go.set()
        await asyncio.gather(*tasks)


async def _not_ready_naming_database(ops_url: str) -> bool:
    code, body = await readyz(ops_url)
    return code == 503 and "database" in body["failing"]


async def _ready(ops_url: str) -> bool:
    return (await readyz(ops_url))[0] == 200


async def test_database_unreachable_fails_closed_and_recovers(tmp_path: Path) -> None:
    forwarder = await TcpForwarder("127.0.0.1", 5432).start()
    try:
        async with database_urls("postgresql", tmp_path, ["central", "ss1", "ss2"]) as urls:
            # both security servers reach PostgreSQL only through the forwarder; the central server directly
            via = {code: make_url(urls[code]).set(port=forwarder.port).render_as_string(hide_password=False)
                   for code in ("ss1", "ss2")}
            overrides = {"database_connect_timeout_seconds": DB_TIMEOUT,
                         "database_statement_timeout_seconds": DB_TIMEOUT}
            async with probed_federation(tmp_path / "fed", database_urls={**urls, **via},
                                         server_overrides=overrides) as (fed, _probe):
                await _drill(fed.server("ss1"), fed.server("ss2"), forwarder)
    finally:
        await forwarder.close()


async def _drill(ss1: SecurityServer, ss2: SecurityServer, forwarder: TcpForwarder) -> None:
    load = Load(ss1)
    async with running(load):
        # (1) steady load, all well
        await wait_for_condition(lambda: load.count(0, ok=True) >= 10, timeout=OUTAGE, what="exchanges flow")
        await wait_for_condition(lambda: _ready(ss1.ops_url), timeout=OUTAGE, what="ss1 ready")
        for how in ("cut", "hang"):
            # (2) the database is out of reach: exchanges fail closed, precisely, within the bound
            mark = len(load.answers)
            forwarder.cut() if how == "cut" else forwarder.hang()
            await wait_for_condition(lambda m=mark: load.count(m, ok=False) >= 4, timeout=OUTAGE,  # type: ignore[misc]
                                     what=f"exchanges refused while the database is {how}")
            await wait_for_condition(lambda: _not_ready_naming_database(ss1.ops_url), timeout=OUTAGE,
                                     what=f"ss1 not ready, naming the database, while it is {how}")
            _, body = await readyz(ss2.ops_url)
            assert "database" in body["failing"], body
            assert value(samples(await scrape(ss1.ops_url)), "gateway_readiness_check", check="database") == 0
            failed = [(s, f) for _, s, f in load.since(mark) if s != 200]
            assert all(s == 500 and f is not None and f.endswith(".LoggingFailed") for s, f in failed), failed
            # (3) the database is back: the servers are ready again with no exchange arriving (as behind a
            #     balancer that follows /readyz), and exchanges succeed by themselves
            load.go.clear()
            await wait_for_condition(lambda: load.in_flight == 0, timeout=EXCHANGE_BOUND, what="the load paused")
            forwarder.restore()
            await wait_for_condition(lambda: _ready(ss1.ops_url), timeout=OUTAGE, what="ss1 ready again")
            await wait_for_condition(lambda: _ready(ss2.ops_url), timeout=OUTAGE, what="ss2 ready again")
            back = len(load.answers)
            load.go.set()
            await wait_for_condition(lambda b=back: load.count(b, ok=True) >= 10, timeout=OUTAGE,  # type: ignore[misc]
                                     what=f"exchanges succeed again after the database was {how}")
            assert all(s == 200 for _, s, _ in load.since(back)), [a for a in load.since(back) if a[1] != 200]
    assert not load.hung, f"{len(load.hung)} exchanges took longer than {EXCHANGE_BOUND} s"
    # (4) nothing acknowledged is lost: each exchange answered 200 is in both logs, request and response
    ok = {m for m, s, _ in load.answers if s == 200}
    for server in (ss1, ss2):
        logged: dict[str, set[str]] = {}
        for r in await records(server):
            logged.setdefault(r.message_id, set()).add(r.kind)
        missing = [m for m in ok if logged.get(m) != {"request", "response"}]
        assert not missing, (server.settings.server.id, missing)
    found = samples(await scrape(ss1.ops_url))
    assert value(found, "gateway_messagelog_commit_failures_total") >= 1
    assert value(found, "gateway_readiness_check", check="database") == 1
    refused = sum(v for (name, labels), v in found.items() if name == "gateway_exchange_errors_total"
                  and dict(labels)["type"].endswith(".LoggingFailed"))
    assert refused == sum(s != 200 for _, s, _ in load.answers), refused


@pytest.mark.parametrize(("how", "error"), [
    ("refuse", "serverconf database error: ConnectionResetError"),
    ("hang", "serverconf database error: TimeoutError"),
])
async def test_unreachable_database_is_a_database_error_in_bounded_time(how: str, error: str) -> None:
    """What the readiness check's write meets when the database cannot be reached: the store's precise
    ``DatabaseError`` (never the driver's exception, which made ``/readyz`` answer 500), within the connect bound."""
    forwarder = await TcpForwarder("127.0.0.1", 5432).start()
    forwarder.cut() if how == "refuse" else forwarder.hang()
    url = make_url(PG_DSN.replace("postgresql://", "postgresql+asyncpg://", 1)).set(port=forwarder.port)
    engine = make_engine(url.render_as_string(hide_password=False), connect_timeout=0.5, statement_timeout=0.5)
    try:
        async with asyncio.timeout(10):
            with pytest.raises(DatabaseError, match=error) as caught:
                await ServerConfStore(engine).check_writable()
        assert caught.value.fault == "DatabaseError"
    finally:
        await engine.dispose()
        await forwarder.close()
