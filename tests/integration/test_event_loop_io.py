"""No file or database I/O on the event loop's thread during exchanges (docs/messagelog.md section 12), with
the message log on SQLite: every SQLite statement of the process (the log's writer, its WAL checkpoints, the
engine's reads) and every file operation is recorded with the thread that ran it (each SQLite connection made
during the test gets a trace callback; a Python audit hook sees file operations: ``open``, ``os.*``,
``shutil.*``, ``tempfile.*``, ``sqlite3.connect``), while the two security servers, in this process and on its
event loop, serve a concurrent load. A deterministic check, not a timing one: a blocking call that is never made on the
loop's thread cannot stall it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from exchange_kit import PROBE, call, probed_federation

from gateway.messagelog.store import sqlite as sqlite_writer

pytestmark = pytest.mark.integration

EXCHANGES = 64
CONCURRENCY = 16
_FILE_EVENTS = ("open", "os.", "shutil.", "tempfile.", "glob.", "sqlite3.connect")


class _Watch:
    """What the trace callbacks and the audit hook record; off unless a test turns it on (an audit hook cannot be
    removed once added)."""

    window = False  # record statements and file operations
    statements: list[tuple[int, str, str]] = []  # (thread ident, thread name, SQL)
    files: list[tuple[int, str, str]] = []  # (thread ident, event, arguments)


def _on_statement(sql: str) -> None:
    if _Watch.window:
        thread = threading.current_thread()
        _Watch.statements.append((thread.ident or 0, thread.name, sql))


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _Watch.window and event.startswith(_FILE_EVENTS):
        _Watch.files.append((threading.get_ident(), event, repr(args)[:200]))


_installed: list[bool] = []


def _install() -> None:
    if not _installed:
        sys.addaudithook(_audit)
        _installed.append(True)


async def test_no_file_or_database_io_on_the_event_loop_thread_during_exchanges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_writer, "WAL_CHECKPOINT_BYTES", 8 * 1024)  # so that the load checkpoints too
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(_on_statement)
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced)  # the log's writer, its checkpoints and aiosqlite use it
    _install()
    loop_thread = threading.get_ident()
    _Watch.statements, _Watch.files = [], []
    try:
        async with probed_federation(tmp_path / "fed") as (fed, _probe):
            ss1 = fed.server("ss1")
            for i in range(3):  # warm-up: pooled connections, caches, lazily imported modules
                assert (await call(ss1, f"{PROBE}/warm/{i}")).status == 200
            semaphore = asyncio.Semaphore(CONCURRENCY)

            async def one(i: int) -> int:
                async with semaphore:
                    answer = await call(ss1, f"{PROBE}/io/{i}", headers={"X-Road-Id": f"DEV-io-{uuid.uuid4()}"})
                    return answer.status

            _Watch.window = True
            try:
                statuses = await asyncio.gather(*(one(i) for i in range(EXCHANGES)))
                for server in (ss1, fed.server("ss2")):  # every record committed while watching
                    await server.messagelog.size(server.context.origin)  # type: ignore[union-attr]
            finally:
                _Watch.window = False
    finally:
        _Watch.window = False
    assert statuses == [200] * EXCHANGES
    on_loop = [s for s in _Watch.statements if s[0] == loop_thread]
    assert on_loop == [], on_loop[:5]
    files_on_loop = [f for f in _Watch.files if f[0] == loop_thread]
    assert files_on_loop == [], files_on_loop[:5]
    # The watch did see the log's work, on the threads made for it: the batches and the WAL checkpoints.
    inserts = {name for _i, name, sql in _Watch.statements if sql.startswith("INSERT INTO messagelog_records")}
    checkpoints = {name for _i, name, sql in _Watch.statements if sql.startswith("PRAGMA wal_checkpoint")}
    assert inserts and {n.rsplit("_", 1)[0] for n in inserts} == {"messagelog-writer"}
    assert checkpoints and {n.rsplit("_", 1)[0] for n in checkpoints} == {"messagelog-wal"}
