"""Benchmark: the admin audit log as a Merkle log: appends (one writer, and writers on two connection pools at
once, as the server and a CLI process), the online chain check and the export, on SQLite or PostgreSQL.

Each append is one transaction that increments the tree head first (docs/witness.md section 7), so concurrent
writers queue on that row: the figure shows what the serialisation costs. No checkpoints are signed here (the
export is run with ``include_uncovered``).

    .venv/bin/python bench/auditlog.py [--entries 2000] [--url sqlite+aiosqlite:///tmp/audit-bench.db]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.admin.auditexport import check_online, export_audit
from gateway.admin.store import AdminStore, AuditEntry
from gateway.identifiers import SecurityServerId
from gateway.storage.db import make_engine

SERVER = SecurityServerId.parse("DEV/GOV/1001/ss1")


def _entry(n: int) -> AuditEntry:
    return AuditEntry(at=datetime.now(UTC), actor="alice", auth="jwt", remote="127.0.0.1", action="addClient",
                      method="POST", path="/api/v1/clients", result="success", status=201,
                      details={"id": f"DEV/GOV/1001/c{n}"})


async def main(entries: int, url: str) -> None:
    engine, other = make_engine(url), make_engine(url)
    try:
        store, second = AdminStore(engine), AdminStore(other)
        await store.migrate()
        t0 = time.perf_counter()
        for i in range(entries):
            await store.write_audit(_entry(i))
        one = time.perf_counter() - t0
        t0 = time.perf_counter()

        async def writer(s: AdminStore, base: int) -> None:
            for i in range(entries // 2):
                await s.write_audit(_entry(base + i))

        await asyncio.gather(writer(store, 0), writer(second, entries))
        two = time.perf_counter() - t0
        t0 = time.perf_counter()
        check = await check_online(store, SERVER)
        verify = time.perf_counter() - t0
        assert check.ok and check.chain.size == 2 * (entries // 2) + entries
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            await export_audit(store, Path(d) / "a.zip", server_id=SERVER, globalconfs=[], now=datetime.now(UTC),
                               include_uncovered=True)
            export = time.perf_counter() - t0
        print(f"database {url.split(':', 1)[0]}, {entries} entries per run")
        print(f"append, one writer:        {entries / one:8.0f} entries/s ({one / entries * 1e3:.2f} ms each)")
        print(f"append, two pools at once: {entries / two:8.0f} entries/s (no gap, no duplicate)")
        print(f"online chain check:        {check.chain.size / verify:8.0f} entries/s ({check.chain.size} entries)")
        print(f"export (no checkpoints):   {check.chain.size / export:8.0f} entries/s")
    finally:
        await engine.dispose()
        await other.dispose()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=2000)
    p.add_argument("--url", default=None, help="database URL (default: a new SQLite file in a temporary directory)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(a.entries, a.url or f"sqlite+aiosqlite:///{tmp}/audit.db"))
