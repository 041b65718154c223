"""Message-log store with group commit, on SQLite and PostgreSQL (and the in-memory double)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import MessageLogError
from gateway.identifiers import ServiceId, SubsystemId
from gateway.messagelog.record import LogRecord, blob_name, blob_refs, leaf_hash
from gateway.messagelog.store import (
    THREAD_ENCODE_BYTES,
    MemoryMessageLogStore,
    MessageLogStore,
    SqlMessageLogStore,
    migrate_messagelog,
)
from gateway.messagelog.store import sqlite as sqlite_writer
from gateway.storage.db import make_engine

pytestmark = pytest.mark.integration

ORIGIN_A = "DEV/GOV/1001/ss1"
ORIGIN_B = "DEV/GOV/1002/ss1"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def rec(i: int, *, origin: str = ORIGIN_A, side: str = "client", **changes: Any) -> LogRecord:
    fields: dict[str, Any] = {
        "origin": origin,
        "kind": "request",
        "side": side,
        "message_id": f"DEV-{i}",
        "request_id": f"req-{i}",
        "client": SubsystemId.parse("DEV/GOV/1001/consumer"),
        "service": ServiceId.parse("DEV/GOV/1002/provider/pets"),
        "created": NOW,
        "method": "GET",
        "path": f"/pets/{i}",
        "signature_base": b"base",
        "signature_input": "sig1=()",
        "signature": "sig1=:AA==:",
        "signing_cert": b"cert",
        "ocsp_response": b"ocsp",
        "body_digest": "sha-256=:x:",
        "body": f"body {i}".encode(),
    }
    fields.update(changes)
    return LogRecord(**fields)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(database_url)
    await migrate_messagelog(eng)
    yield eng
    await eng.dispose()


def count_commits(store: SqlMessageLogStore) -> list[int]:
    """Transactions the writer commits: SQLAlchemy's commits on PostgreSQL; on SQLite, where the writer runs
    the driver itself, each INSERT outside an explicit transaction (autocommit) and each COMMIT."""
    counter = [0]
    explicit = [False]

    def on_commit(_conn: Any) -> None:
        counter[0] += 1

    def on_statement(sql: str) -> None:
        verb = sql.split(None, 1)[0].upper()
        if verb == "BEGIN":
            explicit[0] = True
        elif verb in ("COMMIT", "ROLLBACK"):
            explicit[0] = False
            counter[0] += verb == "COMMIT"
        elif verb == "INSERT" and not explicit[0]:
            counter[0] += 1

    if store.engine.dialect.name == "sqlite":
        store.sqlite_trace = on_statement
    else:
        sa.event.listen(store.writer_engine, "commit", on_commit)
    return counter


async def rows(engine: AsyncEngine) -> list[tuple[str, int, str]]:
    async with engine.connect() as conn:
        result = await conn.execute(sa.text("SELECT origin, seq, message_id FROM messagelog_records"))
        return sorted((o, int(s), m) for o, s, m in result)


async def test_concurrent_appends_are_dense_and_group_committed(engine: AsyncEngine) -> None:
    store = SqlMessageLogStore(engine, max_batch=128)
    commits = count_commits(store)
    records = [rec(i, origin=ORIGIN_A if i % 5 else ORIGIN_B) for i in range(500)]
    try:
        results = await asyncio.gather(*(store.append(r) for r in records))
    finally:
        await store.close()
    # Dense, gap-free sequence numbers per origin, in queue order.
    by_origin: dict[str, list[int]] = {ORIGIN_A: [], ORIGIN_B: []}
    for r, (seq, leaf) in zip(records, results, strict=True):
        by_origin[r.origin].append(seq)
        assert leaf == leaf_hash(r.encode())
    assert by_origin[ORIGIN_A] == list(range(400))
    assert by_origin[ORIGIN_B] == list(range(100))
    # Group commit: far fewer transactions than records, and one commit per batch.
    assert store.stats.records == 500
    assert store.stats.batches == commits[0]
    assert 4 <= store.stats.batches < 50
    assert store.stats.largest_batch == 128
    assert store.stats.failed_batches == 0
    # What was stored is what was appended, byte for byte.
    assert await store.size(ORIGIN_A) == 400
    assert await store.size(ORIGIN_B) == 100
    assert await store.size("DEV/GOV/9/none") == 0
    stored = await store.read(ORIGIN_B, start=0, limit=1000)
    assert [s.seq for s in stored] == list(range(100))
    expected_b = [r for r in records if r.origin == ORIGIN_B]
    assert [s.decode() for s in stored] == expected_b
    assert [s.leaf_hash for s in stored] == [leaf_hash(r.encode()) for r in expected_b]
    assert [s.seq for s in await store.read(ORIGIN_A, start=390, limit=5)] == [390, 391, 392, 393, 394]


async def test_sequence_continues_in_a_new_store(engine: AsyncEngine) -> None:
    first = SqlMessageLogStore(engine)
    assert [(await first.append(rec(i))).seq for i in range(3)] == [0, 1, 2]
    await first.close()
    second = SqlMessageLogStore(engine)
    try:
        assert (await second.append(rec(3))).seq == 3
    finally:
        await second.close()


async def _poison(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON messagelog_records "
                "WHEN NEW.message_id = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned record'); END"
            )
        else:
            await conn.exec_driver_sql(
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
                "IF NEW.message_id = 'poison' THEN RAISE EXCEPTION 'poisoned record'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            await conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON messagelog_records "
                "FOR EACH ROW EXECUTE FUNCTION poison()"
            )


async def test_failed_batch_fails_every_caller_and_stores_nothing(engine: AsyncEngine) -> None:
    store = SqlMessageLogStore(engine)
    try:
        assert (await store.append(rec(0))).seq == 0  # the writer is running and idle
        await _poison(engine)
        # The poisoned record sits in the middle: rows before it were inserted in the same transaction.
        batch = [rec(i, side="client" if i % 2 else "server") for i in range(1, 11)]
        batch.insert(5, rec(99, message_id="poison"))
        outcomes = await asyncio.gather(*(store.append(r) for r in batch), return_exceptions=True)
        assert store.stats.failed_batches == 1
        for r, outcome in zip(batch, outcomes, strict=True):
            assert isinstance(outcome, MessageLogError)
            side = "ClientProxy" if r.side == "client" else "ServerProxy"
            assert outcome.xroad_type == f"Server.{side}.LoggingFailed"
            assert outcome.message.startswith("message log write failed: ")
            assert "poisoned record" in outcome.message
            assert outcome.__cause__ is not None
        assert await rows(engine) == [(ORIGIN_A, 0, "DEV-0")]  # nothing of the batch
        # The writer carries on, with no gap where the failed batch was.
        assert (await store.append(rec(12))).seq == 1
    finally:
        await store.close()
    assert await rows(engine) == [(ORIGIN_A, 0, "DEV-0"), (ORIGIN_A, 1, "DEV-12")]


async def test_lost_table_fails_closed(engine: AsyncEngine) -> None:
    store = SqlMessageLogStore(engine)
    try:
        await store.append(rec(0))
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP TABLE messagelog_records"))
        outcomes = await asyncio.gather(
            *(store.append(rec(i)) for i in range(1, 21)), return_exceptions=True
        )
        for o in outcomes:
            assert isinstance(o, MessageLogError)
            assert o.xroad_type == "Server.ClientProxy.LoggingFailed"
            assert o.message.startswith("message log write failed: ")
            assert "messagelog_records" in o.message  # SQLite: no such table; PostgreSQL: does not exist
        with pytest.raises(MessageLogError, match=r"message log read failed: .*messagelog_records"):
            await store.size(ORIGIN_A)
        with pytest.raises(MessageLogError, match=r"message log read failed: .*messagelog_records"):
            await store.read(ORIGIN_A)
    finally:
        await store.close()


async def test_read_only_sqlite_file_fails_closed(tmp_path: Any) -> None:
    path = tmp_path / "ro.db"
    eng = make_engine(f"sqlite+aiosqlite:///{path}")
    await migrate_messagelog(eng)
    await eng.dispose()
    ro = make_engine(f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true")
    store = SqlMessageLogStore(ro)
    try:
        with pytest.raises(MessageLogError, match="message log write failed: OperationalError") as info:
            await store.append(rec(0, side="server"))
        assert info.value.xroad_type == "Server.ServerProxy.LoggingFailed"
    finally:
        await store.close()
        await ro.dispose()


async def test_sqlite_wal_is_checkpointed_off_the_commit_path(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The writer's own connection never copies the WAL into the database (wal_autocheckpoint=0, so no commit
    # pays for it); a thread of the store's own does, every WAL_CHECKPOINT_BYTES of records.
    monkeypatch.setattr(sqlite_writer, "WAL_CHECKPOINT_BYTES", 16 * 1024)
    path = tmp_path / "log.db"
    eng = make_engine(f"sqlite+aiosqlite:///{path}")
    await migrate_messagelog(eng)
    store = SqlMessageLogStore(eng)
    statements: list[str] = []
    store.sqlite_trace = statements.append
    runs = [0]
    checkpoint = store._wal_checkpoint

    def counted() -> None:
        runs[0] += 1
        checkpoint()

    monkeypatch.setattr(store, "_wal_checkpoint", counted)
    size_before = path.stat().st_size
    body = bytes(range(256)) * 8  # 2 KiB: about 3 KiB per encoded record
    try:
        for i in range(0, 60, 3):  # sequential batches, so that every batch's commit counts the bytes
            await asyncio.gather(*(store.append(rec(j, body=body)) for j in range(i, i + 3)))
    finally:
        await store.close()  # waits for the checkpoint thread
    try:
        assert "PRAGMA wal_autocheckpoint=0" in statements
        assert "PRAGMA synchronous=FULL" in statements
        assert runs[0] >= 5  # ~180 KiB of records, a checkpoint per 16 KiB
        # the records reached the database file itself, not only the WAL
        assert path.stat().st_size - size_before >= 60 * len(body)
        assert len(await rows(eng)) == 60
    finally:
        await eng.dispose()


async def test_close_flushes_queued_records_then_refuses(engine: AsyncEngine) -> None:
    store = SqlMessageLogStore(engine, max_batch=4)
    tasks = [asyncio.create_task(store.append(rec(i))) for i in range(10)]
    await asyncio.sleep(0)  # let the tasks queue their records (ordering, not timing)
    await store.close()
    assert sorted(t.result().seq for t in tasks) == list(range(10))
    assert len(await rows(engine)) == 10
    with pytest.raises(MessageLogError, match="the message log is closed") as info:
        await store.append(rec(11))
    assert info.value.xroad_type == "Server.ClientProxy.LoggingFailed"
    await store.close()  # idempotent


async def test_large_and_oversized_bodies(engine: AsyncEngine) -> None:
    store = SqlMessageLogStore(engine, max_body_bytes=THREAD_ENCODE_BYTES * 2)
    try:
        big = rec(0, body=b"\xff" * (THREAD_ENCODE_BYTES + 1))  # encoded in a thread
        assert (await store.append(big)).seq == 0
        assert (await store.read(ORIGIN_A))[0].decode() == big
        no_body = rec(1, body=None)  # body logging off: only the digest is kept
        assert (await store.append(no_body)).seq == 1
        with pytest.raises(MessageLogError) as info:
            await store.append(rec(2, side="server", body=b"x" * (THREAD_ENCODE_BYTES * 2 + 1)))
        assert info.value.message == (
            f"message body of {THREAD_ENCODE_BYTES * 2 + 1} bytes exceeds the loggable maximum of "
            f"{THREAD_ENCODE_BYTES * 2} bytes"
        )
        assert info.value.xroad_type == "Server.ServerProxy.LoggingFailed"
        assert await store.size(ORIGIN_A) == 2
    finally:
        await store.close()


async def test_cancelled_caller_still_logged(engine: AsyncEngine) -> None:
    store = SqlMessageLogStore(engine)
    try:
        task = asyncio.create_task(store.append(rec(0)))
        await asyncio.sleep(0)  # queued
        task.cancel()
        assert (await store.append(rec(1))).seq == 1  # rec(0) was committed first, in order
        assert task.cancelled()
    finally:
        await store.close()
    assert [m for _, _, m in await rows(engine)] == ["DEV-0", "DEV-1"]


@pytest.mark.parametrize(
    ("start", "limit"), [(-1, 10), (0, 0), (0, 10_001)],
)
async def test_read_bounds(start: int, limit: int) -> None:
    store = MemoryMessageLogStore()
    with pytest.raises(MessageLogError, match=f"read range start={start} limit={limit} is out of bounds"):
        await store.read(ORIGIN_A, start=start, limit=limit)


async def test_memory_double_has_the_same_behaviour() -> None:
    store: MessageLogStore = MemoryMessageLogStore(max_batch=50)
    assert isinstance(store, MemoryMessageLogStore)
    results = await asyncio.gather(*(store.append(rec(i)) for i in range(200)))
    assert [r.seq for r in results] == list(range(200))
    assert 4 <= store.stats.batches < 200
    store.fail_with = OSError("disk full")
    outcomes = await asyncio.gather(*(store.append(rec(i)) for i in range(5)), return_exceptions=True)
    assert [str(o) for o in outcomes] == ["message log write failed: OSError: disk full"] * 5
    store.fail_with = None
    assert (await store.append(rec(300))).seq == 200
    assert [r.message_id for r in store.records(ORIGIN_A)][-2:] == ["DEV-199", "DEV-300"]
    assert await store.size(ORIGIN_A) == 201
    await store.close()


# ---- blobs: certificates and OCSP responses stored once per log (docs/messagelog.md section 4) ----------------


def statements(store: SqlMessageLogStore) -> list[str]:
    """Every statement the writer runs (on SQLite the driver's, on PostgreSQL SQLAlchemy's)."""
    seen: list[str] = []
    if store.engine.dialect.name == "sqlite":
        before = store.sqlite_trace  # count_commits' (this one comes after it)

        def trace(sql: str) -> None:
            seen.append(sql)
            if before is not None:
                before(sql)

        store.sqlite_trace = trace
    else:
        sa.event.listen(store.writer_engine, "before_cursor_execute",
                        lambda _conn, _cursor, sql, *_: seen.append(sql))
    return seen


async def blob_rows(engine: AsyncEngine) -> list[tuple[str, str, bytes]]:
    async with engine.connect() as conn:
        result = await conn.execute(sa.text("SELECT origin, sha256, data FROM messagelog_blobs"))
        return sorted((o, n, bytes(d)) for o, n, d in result)


async def test_blobs_are_stored_once_per_log_in_the_first_records_transaction(engine: AsyncEngine) -> None:
    store = SqlMessageLogStore(engine, max_batch=8)
    commits = count_commits(store)
    seen = statements(store)
    try:
        assert (await store.append(rec(0))).seq == 0
        assert [s for s in seen if "messagelog_blobs" in s]  # the first batch stores the certificate and OCSP
        seen.clear()
        later = await asyncio.gather(*(store.append(rec(i)) for i in range(1, 20)))  # several batches
        assert [a.seq for a in later] == list(range(1, 20))
        assert commits[0] == store.stats.batches >= 3  # the blobs went with the records: no commit of their own
        assert not [s for s in seen if "messagelog_blobs" in s]  # the writer knows what it has stored
        await store.append(rec(20, origin=ORIGIN_B))  # another log keeps its own copy
        await store.append(rec(21, signing_cert=b"another cert"))  # a new certificate: one more blob
        seen.clear()
        await store.append(rec(22))
        assert not [s for s in seen if "messagelog_blobs" in s]
    finally:
        await store.close()
    names = {(o, n) for o, n, _ in await blob_rows(engine)}
    assert names == {(o, blob_name(d)) for o, d in [
        (ORIGIN_A, b"cert"), (ORIGIN_A, b"ocsp"), (ORIGIN_B, b"cert"), (ORIGIN_B, b"ocsp"),
        (ORIGIN_A, b"another cert")]}
    # records name their blobs by SHA-256 and read back whole, with them
    again = SqlMessageLogStore(engine)
    try:
        stored = await again.read(ORIGIN_A, start=0, limit=100)
        assert [s.decode() for s in stored] == [rec(i) for i in range(20)] + [
            rec(21, signing_cert=b"another cert"), rec(22)]
        assert b"cert" not in stored[0].encoded.replace(b'"signing_cert"', b"")  # no copy of the DER in a record
        assert await again.blobs(ORIGIN_A, [blob_name(b"cert"), "0" * 64]) == {blob_name(b"cert"): b"cert"}
        # a writer that starts on a log with its blobs stored adds none twice (the insert skips them)
        await again.append(rec(23))
    finally:
        await again.close()
    assert len(await blob_rows(engine)) == 5


async def test_a_failed_batch_stores_none_of_its_blobs_and_the_next_one_does(engine: AsyncEngine) -> None:
    store = SqlMessageLogStore(engine)
    try:
        await store.append(rec(0))
        await _poison(engine)
        new = b"a certificate first seen in a failed batch"
        outcomes = await asyncio.gather(
            store.append(rec(1, signing_cert=new)), store.append(rec(2, message_id="poison")), return_exceptions=True)
        assert all(isinstance(o, MessageLogError) for o in outcomes)
        assert blob_name(new) not in {n for _, n, _ in await blob_rows(engine)}  # no orphan blob, no dangling name
        # the writer did not take the failed batch's blob for stored: the next record that names it stores it
        assert (await store.append(rec(3, signing_cert=new))).seq == 1
        [last] = await store.read(ORIGIN_A, start=1)
        assert last.decode() == rec(3, signing_cert=new)
    finally:
        await store.close()
    # every name that a stored record gives is a stored blob of its log
    async with engine.connect() as conn:
        result = await conn.execute(sa.text("SELECT origin, record FROM messagelog_records"))
        stored = [(o, bytes(r)) for o, r in result]
    held = {(o, n) for o, n, _ in await blob_rows(engine)}
    assert {(o, n) for o, r in stored for n in blob_refs(r) if n is not None} <= held


async def test_memory_double_stores_blobs_once() -> None:
    store = MemoryMessageLogStore(max_batch=4)
    await asyncio.gather(*(store.append(rec(i)) for i in range(10)))
    await store.append(rec(10, ocsp_response=b"fresh ocsp"))
    assert store.blob_count(ORIGIN_A) == 3
    assert store.records(ORIGIN_A)[-1] == rec(10, ocsp_response=b"fresh ocsp")
    assert [s.decode() for s in await store.read(ORIGIN_A, start=9)] == [rec(9), rec(10, ocsp_response=b"fresh ocsp")]
    await store.close()


async def test_a_database_with_version_1_records_is_refused_at_migration(database_url: str) -> None:
    """Revision 0003 cannot convert version-1 records (their leaf hashes and checkpoints are of their bytes):
    it stops, saying what to do, and changes nothing."""
    from alembic import command

    from gateway.errors import ConfigError
    from gateway.messagelog.models import VERSION_TABLE
    from gateway.messagelog.store import MIGRATIONS
    from gateway.storage.db import _alembic_config

    eng = make_engine(database_url)
    cfg = _alembic_config(MIGRATIONS, VERSION_TABLE)

    def upgrade_to(revision: str) -> Any:
        def run(conn: Any) -> None:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return run

    try:
        async with eng.begin() as conn:
            await conn.run_sync(upgrade_to("0002"))
            await conn.execute(sa.text(
                "INSERT INTO messagelog_records (origin, seq, created, message_id, request_id, kind, side, client, "
                "service, record, leaf_hash) VALUES ('DEV/GOV/1001/ss1', 0, :created, 'm', 'r', 'request', "
                "'client', 'DEV/GOV/1001/c', 'DEV/GOV/1002/p/s', :record, :leaf)"),
                {"created": NOW.replace(tzinfo=None), "record": b'{"v":1}', "leaf": bytes(32)})
        with pytest.raises(ConfigError) as info:
            await migrate_messagelog(eng)
        assert info.value.message == ("the message log database holds 1 records in format version 1, which this "
                                      "version does not read (docs/messagelog.md section 2)")
        assert info.value.hint is not None and "gateway log export" in info.value.hint
        async with eng.connect() as conn:
            version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version_messagelog"))
            assert version == "0002"  # nothing was changed
    finally:
        await eng.dispose()
