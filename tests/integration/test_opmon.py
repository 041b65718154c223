"""Operational monitoring, the exchange log line and request ids on error answers (issue 11, item 3), on a
running federation on SQLite and on PostgreSQL (real sockets, TLS, databases): the records of good and refused
exchanges on both sides with their fields, read through the admin API with filters and pages and the roles
that may read them; retention pruning; ``X-Road-Request-Id`` on error answers of both sides; the ``exchange``
log line and the refusal's; the bounded queue dropping and counting, and a failed insert counted."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import sqlalchemy as sa
from exchange_kit import (
    CONSUMER,
    PROBE,
    FailingLog,
    Probe,
    auth_ssl,
    call,
    craft_request,
    database_urls,
    ocsp_for,
    probed_federation,
    send_to_server_port,
    signer_of,
    swapped_log,
)
from structlog.testing import capture_logs
from waiting import wait_for_condition

from gateway.admin.roles import Role
from gateway.dev.demo import Federation
from gateway.errors import DatabaseError
from gateway.opmon.record import OpQuery, OpRecord
from gateway.opmon.store import OpMonStore
from gateway.opmon.writer import OpMonWriter
from gateway.server.runtime import SecurityServer
from gateway.storage.db import make_engine

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

NOSUCH = "DEV/GOV/1002/registry/nosuch"  # a service that ss2 does not have
PASSWORD = "opmon-test-password-1"


@dataclass
class World:
    fed: Federation
    probe: Probe
    ss1: SecurityServer
    ss2: SecurityServer
    tokens: dict[tuple[str, str], str]  # (server code, role) -> session token

    async def login(self, ss: SecurityServer, role: Role) -> str:
        key = (str(ss.server_id), role)
        if key not in self.tokens:
            name = f"u-{role}"
            await ss.admin_store.add_user(name, PASSWORD, frozenset({role}), now=datetime.now(UTC))
            async with aiohttp.ClientSession() as http, http.post(
                    f"{ss.admin_url}/api/v1/login", json={"username": name, "password": PASSWORD}) as resp:
                assert resp.status == 200, await resp.text()
                self.tokens[key] = (await resp.json())["token"]
        return self.tokens[key]

    async def opmon(self, ss: SecurityServer, role: Role = "observer", **query: Any) -> tuple[int, Any]:
        """``GET /api/v1/opmon/records`` on ``ss`` after its queue is written out: status and JSON."""
        assert ss.opmon is not None
        await ss.opmon.idle()
        token = await self.login(ss, role)
        async with aiohttp.ClientSession() as http, http.get(
                f"{ss.admin_url}/api/v1/opmon/records", params={k: str(v) for k, v in query.items()},
                headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json()

    async def one(self, ss: SecurityServer, request_id: str) -> dict[str, Any]:
        status, body = await self.opmon(ss, request_id=request_id)
        assert status == 200, body
        assert body["total"] == 1, body
        return body["items"][0]  # type: ignore[no-any-return]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp(f"opmon-{request.param}")
    async with database_urls(request.param, tmp, ["ss1", "ss2", "central"]) as dbs, probed_federation(
        tmp / "fed", database_urls=dbs,
    ) as (fed, probe):
        yield World(fed=fed, probe=probe, ss1=fed.server("ss1"), ss2=fed.server("ss2"), tokens={})


def _times(rec: dict[str, Any]) -> list[datetime]:
    return [datetime.fromisoformat(rec[k].replace("Z", "+00:00"))
            for k in ("request_in", "request_out", "response_in", "response_out") if rec[k] is not None]


async def test_records_of_a_good_exchange_on_both_sides(world: World) -> None:
    before = datetime.now(UTC)
    body = b'{"name": "Mari Maasikas"}'
    answer = await call(world.ss1, f"{PROBE}/persons/7", method="POST", data=body,
                        headers={"X-Road-Id": "msg-good-1", "Content-Type": "application/json"})
    assert answer.status == 200
    request_id = answer.headers["X-Road-Request-Id"]
    mine, theirs = await world.one(world.ss1, request_id), await world.one(world.ss2, request_id)
    for rec, side, peer in ((mine, "client", world.ss2), (theirs, "server", world.ss1)):
        assert rec["side"] == side and rec["origin"] == world.fed.server(
            "ss1" if side == "client" else "ss2").origin
        assert (rec["message_id"], rec["request_id"]) == ("msg-good-1", request_id)
        assert (rec["client"], rec["service"], rec["method"]) == (CONSUMER, PROBE, "POST")
        assert (rec["status"], rec["fault"], rec["outcome"]) == (200, None, "ok")
        assert rec["peer_server"] == str(peer.server_id)
        assert rec["request_bytes"] == len(body)
        assert "Mari" not in str(rec)  # never bodies
        assert None not in (rec["request_out"], rec["response_in"])
        times = _times(rec)
        assert times == sorted(times) and before - timedelta(seconds=1) <= times[0]
    assert mine["response_bytes"] == len(answer.body)
    # the provider's answer is its service's body; the consumer's answer is the same body passed on
    assert theirs["response_bytes"] == mine["response_bytes"]
    # the consumer's exchange encloses the provider's
    assert _times(mine)[1] <= _times(theirs)[0] and _times(theirs)[3] <= _times(mine)[2]


async def test_on_sqlite_the_records_live_in_a_file_of_their_own(world: World) -> None:
    """Their batch inserts must not hold the write lock of the message log's database."""
    import sqlite3

    from gateway.storage.db import sqlite_sibling_url

    url = world.ss1.settings.server.database_url
    if not url.startswith("sqlite"):
        assert sqlite_sibling_url(url, "-opmon") is None  # PostgreSQL: the server's own database
        return
    answer = await call(world.ss1, f"{PROBE}/apart")
    assert (await world.one(world.ss1, answer.headers["X-Road-Request-Id"]))["status"] == 200
    main = url.split(":///", 1)[1]
    for path, has in ((main, False), (main + "-opmon", True)):
        with sqlite3.connect(path) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert ("opmon_records" in tables) is has, (path, tables)


async def test_refused_by_the_provider_is_failed_on_both_sides(world: World) -> None:
    answer = await call(world.ss1, f"{NOSUCH}/x")
    answer.assert_error(500, "Server.ServerProxy.UnknownService")
    request_id = answer.headers["X-Road-Request-Id"]
    mine, theirs = await world.one(world.ss1, request_id), await world.one(world.ss2, request_id)
    for rec in (mine, theirs):
        assert (rec["fault"], rec["outcome"], rec["status"], rec["service"]) == (
            "Server.ServerProxy.UnknownService", "failed", 500, NOSUCH)
    assert mine["request_out"] is not None and mine["response_in"] is not None
    assert theirs["request_out"] is None and theirs["response_in"] is None  # the service was never called


async def test_refused_before_a_request_id_has_none(world: World) -> None:
    client = f"DEV/GOV/1001/nobody{uuid.uuid4().hex[:8]}"
    answer = await call(world.ss1, f"{PROBE}/x", client=client)
    answer.assert_error(500, "Server.ClientProxy.UnknownMember")
    assert "X-Road-Request-Id" not in answer.headers
    status, body = await world.opmon(world.ss1, client=client)
    assert status == 200 and body["total"] == 1
    [rec] = body["items"]
    assert rec["request_id"] is None and rec["request_out"] is None and rec["peer_server"] is None
    assert (rec["side"], rec["outcome"], rec["fault"]) == ("client", "failed", "Server.ClientProxy.UnknownMember")


async def test_client_side_error_answer_carries_the_request_id_and_its_log_line(world: World) -> None:
    with capture_logs() as logs:
        async with swapped_log(world.ss1, FailingLog("request")):
            answer = await call(world.ss1, f"{PROBE}/x")
    answer.assert_error(500, "Server.ClientProxy.LoggingFailed")
    request_id = answer.headers["X-Road-Request-Id"]
    refused = [e for e in logs if e["event"] == "request refused" and e.get("request_id") == request_id]
    assert len(refused) == 1 and refused[0]["type"] == "Server.ClientProxy.LoggingFailed"
    [line] = [e for e in logs if e["event"] == "exchange" and e["request_id"] == request_id]
    assert (line["side"], line["status"], line["fault"], line["client"], line["service"]) == (
        "client", 500, "Server.ClientProxy.LoggingFailed", CONSUMER, PROBE)
    assert (await world.one(world.ss1, request_id))["fault"] == "Server.ClientProxy.LoggingFailed"


async def test_server_side_error_answer_carries_the_verified_request_id(world: World) -> None:
    signer = signer_of(world.ss1)
    crafted = craft_request(signer=signer, ocsp=ocsp_for(world.fed.ca, signer.cert, now=datetime.now(UTC)),
                            service=PROBE)
    tls = auth_ssl(world.ss1, world.fed.ca)
    assert (await send_to_server_port(world.ss2.server_address, tls, crafted)).status == 200
    with capture_logs() as logs:
        again = await send_to_server_port(world.ss2.server_address, tls, crafted)
    again.assert_error(500, "Server.ServerProxy.ReplayedRequest")
    assert again.headers["X-Road-Request-Id"] == crafted.request_id
    assert [e["type"] for e in logs if e["event"] == "request refused"
            and e.get("request_id") == crafted.request_id] == ["Server.ServerProxy.ReplayedRequest"]
    status, body = await world.opmon(world.ss2, request_id=crafted.request_id)
    assert status == 200 and [r["outcome"] for r in body["items"]] == ["failed", "ok"]  # newest first
    # a request that fails its signature check names no request id: nothing of it is verified
    forged = craft_request(signer=signer, ocsp=ocsp_for(world.fed.ca, signer.cert, now=datetime.now(UTC)),
                           service=PROBE)
    bad = await send_to_server_port(world.ss2.server_address, tls, forged,
                                    headers={**forged.headers, "X-Road-Id": "tampered"})
    assert bad.status == 500 and "X-Road-Request-Id" not in bad.headers


async def test_exchange_log_line_and_its_setting(world: World) -> None:
    with capture_logs() as logs:
        answer = await call(world.ss1, f"{PROBE}/ok", headers={"X-Road-Id": "msg-log-1"})
    request_id = answer.headers["X-Road-Request-Id"]
    lines = {e["side"]: e for e in logs if e["event"] == "exchange" and e["request_id"] == request_id}
    assert set(lines) == {"client", "server"}
    for line in lines.values():
        assert line["log_level"] == "info"
        assert (line["message_id"], line["client"], line["service"], line["status"], line["fault"]) == (
            "msg-log-1", CONSUMER, PROBE, 200, None)
        assert line["duration_ms"] > 0
    assert lines["client"]["duration_ms"] >= lines["server"]["duration_ms"]
    ctx = world.ss1.context
    assert ctx is not None
    ctx.exchange_log = False
    try:
        with capture_logs() as quiet:
            assert (await call(world.ss1, f"{PROBE}/ok")).status == 200
    finally:
        ctx.exchange_log = True
    assert [e for e in quiet if e["event"] == "exchange" and e["side"] == "client"] == []


async def test_health_probe_is_no_exchange_but_list_clients_is(world: World) -> None:
    start = datetime.now(UTC)
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{world.ss1.client_url}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"{world.ss1.client_url}/listClients") as resp:
                assert resp.status == 200
    assert [(e["side"], e["status"], e["request_id"]) for e in logs if e["event"] == "exchange"] == [
        ("client", 200, None)]  # /listClients only
    window = {"from": start.isoformat(), "to": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}
    status, body = await world.opmon(world.ss1, **window)
    assert status == 200 and body["total"] == 1, body
    [rec] = body["items"]
    assert (rec["status"], rec["client"], rec["request_out"], rec["outcome"]) == (200, None, None, "ok")


async def test_filters_and_pages_through_the_admin_api(world: World) -> None:
    start = datetime.now(UTC)
    ids = []
    for i in range(5):
        answer = await call(world.ss1, f"{PROBE}/page{i}")
        assert answer.status == 200
        ids.append(answer.headers["X-Road-Request-Id"])
    (await call(world.ss1, f"{NOSUCH}/x")).assert_error(500, "Server.ServerProxy.UnknownService")
    end = datetime.now(UTC) + timedelta(seconds=1)
    window = {"from": start.isoformat(), "to": end.isoformat(), "side": "client"}
    # newest first, two per page, the total of the whole filtered set on every page
    seen: list[str] = []
    for offset in (0, 2, 4):
        status, body = await world.opmon(world.ss1, **window, service=PROBE, outcome="ok", limit=2, offset=offset)
        assert status == 200 and body["total"] == 5 and (body["limit"], body["offset"]) == (2, offset)
        seen += [r["request_id"] for r in body["items"]]
    assert seen == ids[::-1]
    status, body = await world.opmon(world.ss1, **window, outcome="failed")
    assert status == 200 and [r["service"] for r in body["items"]] == [NOSUCH]
    status, body = await world.opmon(world.ss1, **window, client=CONSUMER)
    assert body["total"] == 6
    status, body = await world.opmon(world.ss1, **{**window, "side": "server"})
    assert body["total"] == 0  # ss1 served no peer in the window
    status, body = await world.opmon(world.ss2, **{**window, "side": "server"}, service=PROBE)
    assert body["total"] == 5
    status, body = await world.opmon(world.ss1, **{"from": end.isoformat()})
    assert status == 200 and body["total"] == 0
    # the system administrator reads them too; the auditor (message log only) and others may not
    assert (await world.opmon(world.ss1, "system-administrator", request_id=ids[0]))[1]["total"] == 1
    for role in ("auditor", "security-officer"):
        status, body = await world.opmon(world.ss1, role)  # type: ignore[arg-type]
        assert status == 403, body


async def test_gateway_admin_api_reads_them_in_a_process_of_its_own(world: World) -> None:
    answer = await call(world.ss1, f"{NOSUCH}/cli")
    request_id = answer.headers["X-Road-Request-Id"]
    assert world.ss1.opmon is not None
    await world.ss1.opmon.idle()
    token = await world.login(world.ss1, "observer")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "admin", "api", "--url", world.ss1.admin_url, "listOpMonRecords",
        "-q", f"request_id={request_id}", "-q", "outcome=failed", "-q", "side=client",
        env={**os.environ, "GATEWAY_ADMIN_TOKEN": token}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    [rec] = json.loads(out)["items"]
    assert (rec["request_id"], rec["fault"]) == (request_id, "Server.ServerProxy.UnknownService")


@pytest.mark.parametrize(("query", "message"), [
    ({"outcome": "maybe"}, "query parameter outcome 'maybe' is not one of ok, failed"),
    ({"side": "both"}, "query parameter side 'both' is not one of client, server"),
    ({"from": "yesterday"}, "query parameter from 'yesterday' is not a time"),
    ({"to": "2026-01-02T03:04:05"}, "query parameter to '2026-01-02T03:04:05' has no time zone"),
    ({"client": "DEV/GOV"}, "identifier"),
    ({"service": "DEV/GOV/1002/registry"}, "identifier"),
    ({"request_id": "x" * 256}, "query parameter request_id is longer than 255 characters"),
    ({"limit": "0"}, "query parameter limit=0 is not in [1, 1000]"),
])
async def test_bad_filters_are_refused(world: World, query: dict[str, str], message: str) -> None:
    status, body = await world.opmon(world.ss1, **query)
    assert status == 400, body
    assert message in body["message"], body


async def test_a_range_ending_before_it_starts_is_empty(world: World) -> None:
    await call(world.ss1, f"{PROBE}/range")
    for since, until in (("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"), ("2000-01-01T00:00:00Z",) * 2):
        status, body = await world.opmon(world.ss1, **{"from": since, "to": until})
        assert status == 200 and body["total"] == 0 and body["items"] == [], body
    status, body = await world.opmon(world.ss1, **{"from": "2000-01-01T00:00:00Z"})
    assert status == 200 and body["total"] >= 1, body  # the same filter with a real range finds records


async def test_retention_prunes_old_records(world: World) -> None:
    answer = await call(world.ss1, f"{PROBE}/keep")
    request_id = answer.headers["X-Road-Request-Id"]
    writer = world.ss1.opmon
    assert writer is not None
    await writer.idle()
    now = datetime.now(UTC)
    await writer.prune(now)  # records of other tests older than the retention may go; this one stays
    assert (await world.opmon(world.ss1, request_id=request_id))[1]["total"] == 1
    # seven days (the default retention) and a minute later it is past its retention
    assert await writer.prune(now + timedelta(days=7, minutes=1)) >= 1
    assert (await world.opmon(world.ss1, request_id=request_id))[1]["total"] == 0


def _record(i: int) -> OpRecord:
    t = datetime.now(UTC)
    return OpRecord(side="client", origin="test", message_id=f"m{i}", request_id=f"r{i}", client=CONSUMER,
                    service=PROBE, method="GET", request_in=t, request_out=None, response_in=None, response_out=t,
                    request_bytes=0, response_bytes=0, status=200, fault=None, peer_server=None)


async def test_full_queue_drops_and_counts_and_a_failed_insert_is_counted(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'opmon.db'}")
    try:
        store = OpMonStore(engine)
        await store.migrate()
        dropped: list[tuple[str, int]] = []
        writer = OpMonWriter(store, max_queue=2, max_batch=1000, retention_days=1, clock=lambda: datetime.now(UTC),
                             on_drop=lambda reason, n: dropped.append((reason, n)))
        assert [writer.offer(_record(i)) for i in range(3)] == [True, True, False]
        assert dropped == [("queue_full", 1)]
        await writer.drain()
        found, total = await store.query(OpQuery(), limit=10, offset=0)
        assert total == 2 and [r.request_id for r in found] == ["r1", "r0"]
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP TABLE opmon_records"))
        assert writer.offer(_record(3))
        await writer.drain()
        assert dropped == [("queue_full", 1), ("database", 1)]
    finally:
        await store.close()
        await engine.dispose()





async def test_writer_task_prunes_at_start_and_writes_as_records_come(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'opmon.db'}")
    try:
        store = OpMonStore(engine)
        await store.migrate()
        old = dataclasses.replace(_record(0), request_in=datetime.now(UTC) - timedelta(days=2))
        await store.insert([old, _record(1)])
        writer = OpMonWriter(store, max_queue=100, max_batch=10, retention_days=1, clock=lambda: datetime.now(UTC),
                             on_drop=lambda reason, n: None)
        stop = asyncio.Event()
        task = asyncio.create_task(writer.run(stop))

        async def ids() -> list[str | None]:
            return [r.request_id for r in (await store.query(OpQuery(), limit=10, offset=0))[0]]

        await wait_for_condition(lambda: _eq(ids(), ["r1"]), timeout=10, what="the old record pruned at start")
        for i in (2, 3):
            assert writer.offer(_record(i))
        await writer.idle()
        assert await ids() == ["r3", "r2", "r1"]
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await store.close()
        await engine.dispose()


async def _eq(found: Any, want: list[str]) -> bool:
    return bool(await found == want)


async def test_the_driver_insert_stores_what_sqlalchemy_reads_and_recovers_from_a_failed_batch(
    database_url: str,
) -> None:
    """The batch insert through the driver (the sqlite3 thread, or asyncpg's executemany) stores every field
    as the engine reads it back; a batch the database refuses raises DatabaseError and writes nothing, and the
    next batch, once the table is back, goes through on a new connection."""
    engine = make_engine(database_url)
    store = OpMonStore(engine)
    try:
        await store.migrate()
        t = datetime(2026, 12, 2, 18, 0, 0, 123456, tzinfo=UTC)
        full = dataclasses.replace(
            _record(0), request_in=t, request_out=t + timedelta(microseconds=250),
            response_in=t + timedelta(milliseconds=3), response_out=t + timedelta(milliseconds=4),
            request_bytes=17, response_bytes=None, status=502, fault="Server.ClientProxy.NetworkError",
            peer_server="SERVER:DEV/GOV/1002/ss2",
        )
        await store.insert([full, _record(1)])
        found, total = await store.query(OpQuery(request_id="r0"), limit=10, offset=0)
        assert total == 1 and found == [full]
        with pytest.raises(DatabaseError, match="operational monitoring database error"):
            await store.insert([dataclasses.replace(_record(2), request_in=t.replace(tzinfo=None))])
        assert (await store.query(OpQuery(), limit=10, offset=0))[1] == 2  # nothing of the refused batch
        async with engine.begin() as conn:
            await conn.execute(sa.text("ALTER TABLE opmon_records RENAME TO opmon_records_away"))
        with pytest.raises(DatabaseError, match="opmon_records"):
            await store.insert([_record(3)])
        async with engine.begin() as conn:
            await conn.execute(sa.text("ALTER TABLE opmon_records_away RENAME TO opmon_records"))
        await store.insert([_record(4), _record(5)])
        found, total = await store.query(OpQuery(), limit=10, offset=0)
        assert total == 4 and [r.request_id for r in found] == ["r5", "r4", "r1", "r0"]
    finally:
        await store.close()
        await engine.dispose()


async def test_a_batch_gathers_records_for_opmon_batch_seconds(tmp_path: Path) -> None:
    """Records offered while a batch gathers (``opmon_batch_seconds``) go into that batch: the writer woke for
    the first, the others came after it had, and one insert takes all three."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'opmon.db'}")
    store = OpMonStore(engine)
    try:
        await store.migrate()
        batches: list[int] = []
        insert = store.insert

        async def counted(batch: Any) -> None:
            batches.append(len(batch))
            await insert(batch)

        store.insert = counted  # type: ignore[method-assign]
        writer = OpMonWriter(store, max_queue=100, max_batch=10, retention_days=1, clock=lambda: datetime.now(UTC),
                             on_drop=lambda reason, n: None, gather_seconds=0.3)
        task = asyncio.create_task(writer.run(asyncio.Event()))
        assert writer.offer(_record(0))
        for _ in range(5):  # the writer's task takes its turn: it is gathering now
            await asyncio.sleep(0)
        assert writer.offer(_record(1)) and writer.offer(_record(2))
        await writer.idle()
        assert batches == [3]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with pytest.raises(ValueError, match=r"opmon_batch_seconds must be within 0\.\.1"):
            OpMonWriter(store, max_queue=1, max_batch=1, retention_days=1, clock=lambda: datetime.now(UTC),
                        on_drop=lambda reason, n: None, gather_seconds=2.0)
    finally:
        await store.close()
        await engine.dispose()
