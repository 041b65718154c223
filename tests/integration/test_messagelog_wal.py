"""The SQLite message log's WAL checkpoints (docs/messagelog.md section 12): small, passive, on a thread and
connection of their own, at a random phase per store, each logged at debug level; the writer's connection
never checkpoints and truncates a WAL grown past ``journal_size_limit`` when it restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest
import structlog
from test_messagelog_store import rec

from gateway.messagelog.store import SqlMessageLogStore, migrate_messagelog
from gateway.messagelog.store import sqlite as sqlite_writer
from gateway.storage.db import make_engine

pytestmark = pytest.mark.integration

BODY = bytes(range(256)) * 8  # 2 KiB: about 3 KiB per encoded record


async def _store(path: Path) -> SqlMessageLogStore:
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    await migrate_messagelog(engine)
    return SqlMessageLogStore(engine)


async def test_checkpoints_run_on_their_own_thread_and_are_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_writer, "WAL_CHECKPOINT_BYTES", 16 * 1024)
    store = await _store(tmp_path / "log.db")
    ran: list[tuple[str, str]] = []  # (thread name, statement)
    store.sqlite_trace = lambda sql: ran.append((threading.current_thread().name, sql))
    loop_thread = threading.current_thread().name
    saved = structlog.get_config()  # another test may have configured a level above debug
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            for i in range(0, 60, 3):  # sequential batches: each one counts its bytes towards the next checkpoint
                await asyncio.gather(*(store.append(rec(j, body=BODY)) for j in range(i, i + 3)))
            await store.close()  # waits for the checkpoint thread
    finally:
        structlog.configure(**saved)
        await store.engine.dispose()
    checkpoints = [(t, sql) for t, sql in ran if sql.startswith("PRAGMA wal_checkpoint")]
    inserts = [(t, sql) for t, sql in ran if sql.startswith("INSERT INTO messagelog_records")]
    assert len(checkpoints) >= 4  # ~180 KiB of records, a checkpoint per 8-24 KiB
    assert {t for t, _ in checkpoints} == {"messagelog-wal_0"}
    assert {t for t, _ in inserts} == {"messagelog-writer_0"}
    assert loop_thread not in {t for t, _ in ran}
    # the writer's connection: never a checkpoint of its own, and the WAL's size limit
    writer = [sql for t, sql in ran if t == "messagelog-writer_0"]
    assert "PRAGMA wal_autocheckpoint=0" in writer
    assert f"PRAGMA journal_size_limit={sqlite_writer.WAL_SIZE_LIMIT_BYTES}" in writer
    # each checkpoint at debug level: SQLite's answer and the time it took
    lines = [e for e in logs if e["event"] == "messagelog_wal_checkpoint"]
    assert len(lines) == len(checkpoints)
    for e in lines:
        assert e["log_level"] == "debug"
        assert e["wal_frames"] >= e["checkpointed_frames"] >= 0
        assert e["busy"] is False
        assert isinstance(e["ms"], float) and e["ms"] >= 0


async def test_two_stores_started_together_checkpoint_at_different_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each store draws its first checkpoint at a random point of the first interval (its phase), from a
    # generator seeded by the operating system, and every later interval from 0.5-1.5 times the mean.
    mean = 64 * 1024
    monkeypatch.setattr(sqlite_writer, "WAL_CHECKPOINT_BYTES", mean)
    stores = [await _store(tmp_path / f"log{i}.db") for i in range(2)]
    try:
        phases = [s._wal_due for s in stores]
        assert all(0 <= p < mean for p in phases)
        assert phases[0] != phases[1]  # equal only with probability 2**-53
        for i in range(60):  # the same records, one batch each, to both: about 180 KiB
            for store in stores:
                await store.append(rec(i, body=BODY))
        for store in stores:
            assert 0.5 * mean <= store._wal_due <= 1.5 * mean  # an interval drawn at the first checkpoint
    finally:
        for store in stores:
            await store.close()
            await store.engine.dispose()
