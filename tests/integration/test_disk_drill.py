"""The "disk full" drill (real sockets, TLS, SQLite on a real filesystem that fills up): ss1's database lives
on a small tmpfs that the test mounts; a filler file takes every byte left; exchanges are then refused with
``LoggingFailed`` and "No space left on device" in the operator's log, ``/readyz`` goes 503, and nothing is
corrupted (``PRAGMA integrity_check``); once the filler is removed, the server is ready again by itself, the
exchanges succeed, every exchange answered 200 has its records in both logs, and the log verifies
(``gateway log checkpoints --verify``).

A tmpfs rather than ``RLIMIT_FSIZE``: the tests run as root here, a tmpfs of a few MiB is created and removed
by the test and touches no other filesystem, and it fails writes as a real full disk does (``ENOSPC``, for
the database, its WAL and every other file), while a file-size limit fails only the process it is set on, with
another error (``EFBIG``). Without root the drill fails, saying why (:func:`drill_kit.small_filesystem`).
"""

from __future__ import annotations

import asyncio
import errno
import json
import sqlite3
import sys
import uuid
from pathlib import Path

import pytest
from drill_kit import small_filesystem
from exchange_kit import PROBE, Answer, call, probed_federation, records
from ops_kit import readyz, samples, scrape, value
from structlog.testing import capture_logs
from waiting import wait_for_condition

from gateway.messagelog.store import SqlMessageLogStore
from gateway.server.runtime import SecurityServer
from gateway.storage.db import make_engine

pytestmark = [pytest.mark.integration]

FS_BYTES = 16 * 2**20  # bytes of the tmpfs holding ss1's database: its schema and the drill's records fit
DISK_FREE = 1 * 2**20  # bytes: [server] readiness_disk_free_bytes for this drill (a sixteenth of the tmpfs)
EXCHANGE_BOUND = 20.0  # seconds: far above an exchange's cost; a full disk must fail one, never hold it
MAX_UNTIL_REFUSED = 3000  # exchanges: more than the records ss1's WAL (at most 4 MiB, reused) can take
FILL_CHUNK = 2**20  # bytes per write of the filler, down to one byte for the last ones
GATEWAY = Path(sys.executable).parent / "gateway"


def fill(path: Path) -> int:
    """Write ``path`` until the filesystem has no byte left; the bytes written."""
    written, chunk = 0, FILL_CHUNK
    with path.open("wb", buffering=0) as f:
        while chunk:
            try:
                written += f.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                chunk //= 2
    return written


async def exchange(ss1: SecurityServer, ok: list[str]) -> Answer:
    """One exchange through ss1, bounded in time; its message id goes into ``ok`` if it was answered 200."""
    message_id = f"DEV-disk-{uuid.uuid4()}"
    async with asyncio.timeout(EXCHANGE_BOUND):
        answer = await call(ss1, f"{PROBE}/disk", headers={"X-Road-Id": message_id})
    if answer.status == 200:
        ok.append(message_id)
    return answer


def integrity(database: Path) -> list[str]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]


async def _ready(ops_url: str) -> bool:
    return (await readyz(ops_url))[0] == 200


async def test_disk_full_refuses_precisely_corrupts_nothing_and_recovers(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small", size_bytes=FS_BYTES) as small:
        database = small / "ss1.db"
        async with probed_federation(tmp_path / "fed", database_urls={"ss1": f"sqlite+aiosqlite:///{database}"},
                                     server_overrides={"readiness_disk_free_bytes": DISK_FREE}) as (fed, _probe):
            ss1, ss2 = fed.server("ss1"), fed.server("ss2")
            ok: list[str] = []
            # (1) all well
            for _ in range(5):
                assert (await exchange(ss1, ok)).status == 200
            await wait_for_condition(lambda: _ready(ss1.ops_url), timeout=30, what="ss1 ready")
            # (2) the disk fills up: not ready at once (the database check sees the space left); exchanges are
            #     refused with LoggingFailed once what SQLite had already allocated (its WAL) is used up, and the
            #     operator's log says why
            filler = small / "filler"
            fill(filler)
            code, body = await readyz(ss1.ops_url)
            assert code == 503 and "database" in body["failing"], body
            assert "below readiness_disk_free_bytes" in body["checks"]["database"]["detail"], body
            with capture_logs() as logs:
                refused = None
                for _ in range(MAX_UNTIL_REFUSED):
                    answer = await exchange(ss1, ok)
                    if answer.status != 200:
                        refused = answer
                        break
                assert refused is not None, f"{MAX_UNTIL_REFUSED} exchanges logged on a full disk"
                refused.assert_error(500, "Server.ClientProxy.LoggingFailed", contains="No space left on device")
                for _ in range(3):  # and so every one, while the disk is full
                    (await exchange(ss1, ok)).assert_error(500, "Server.ClientProxy.LoggingFailed")
            failed = [e for e in logs if e["event"] == "messagelog_commit_failed"]
            assert failed and all("No space left on device" in e["error"] for e in failed), failed
            code, body = await readyz(ss1.ops_url)
            assert code == 503 and "messagelog" in body["failing"], body
            assert "No space left on device" in body["checks"]["messagelog"]["detail"], body
            found = samples(await scrape(ss1.ops_url))
            assert value(found, "gateway_messagelog_commit_failures_total") >= 1
            assert value(found, "gateway_readiness_check", check="messagelog") == 0
            assert value(found, "gateway_exchange_errors_total", side="client",
                         type="Server.ClientProxy.LoggingFailed") == 4
            # (3) nothing is corrupted, even while the disk is full
            assert integrity(database) == ["ok"]
            # (4) space is back: ready again with no exchange arriving, then the exchanges succeed
            filler.unlink()
            await wait_for_condition(lambda: _ready(ss1.ops_url), timeout=30, what="ss1 ready once space is back")
            for _ in range(10):
                assert (await exchange(ss1, ok)).status == 200
            # (5) everything acknowledged is in both logs; the log is whole and verifies
            for server in (ss1, ss2):
                logged: dict[str, set[str]] = {}
                for r in await records(server):
                    logged.setdefault(r.message_id, set()).add(r.kind)
                missing = [m for m in ok if logged.get(m) != {"request", "response"}]
                assert not missing, (server.settings.server.id, missing)
            assert integrity(database) == ["ok"]
            assert ss1.checkpointer is not None
            result = await ss1.checkpointer.run_once(ss1.clock(), force=True)
            assert result.stamp_error is None
            proc = await asyncio.create_subprocess_exec(
                str(GATEWAY), "-c", str(tmp_path / "fed" / "ss1.toml"), "log", "checkpoints", "--verify",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            doc = json.loads(out)
            assert doc["verified"] is True and doc["checkpoints"], doc


async def test_sqlite_full_with_space_left_is_the_size_limit(tmp_path: Path) -> None:
    """SQLITE_FULL on a filesystem with room left: the database's own size limit, said as such (EFBIG)."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")
    store = SqlMessageLogStore(engine)
    try:
        found = store._full(sqlite3.OperationalError("database or disk is full"))
        assert found.errno == errno.EFBIG
        assert "reached its size limit with" in str(found) and str(tmp_path) in str(found), found
    finally:
        await store.close()
        await engine.dispose()
