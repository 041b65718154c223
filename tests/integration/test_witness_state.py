"""The witness's durable state (gateway.witness.state) on SQLite and PostgreSQL: compare and set is atomic under
concurrency, the state survives a new engine (a restart), evidence is kept, bounded and listed.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from gateway.storage.db import make_engine
from gateway.witness import state as state_module
from gateway.witness.service import Evidence, LogState
from gateway.witness.state import WitnessStore

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
ORIGIN = "DEV/GOV/1001/ss1/messagelog"


def st(size: int, tag: str = "", origin: str = ORIGIN) -> LogState:
    return LogState(origin=origin, size=size, root_hash=hashlib.sha256(f"{tag}{size}".encode()).digest(),
                    note=f"note {tag}{size}\n".encode(), updated_at=NOW + timedelta(seconds=size))


def ev(n: int, origin: str = ORIGIN) -> Evidence:
    return Evidence(origin=origin, recorded_at=NOW + timedelta(seconds=n), reason="fork", message=f"fork {n}",
                    peer="DEV/GOV/1001/ss1", old_size=n, note=b"submitted\n", stored_note=b"stored\n",
                    proof=(hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()))


async def test_compare_and_set_and_restart(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        store = WitnessStore(engine)
        await store.migrate()
        await store.migrate()  # idempotent
        assert await store.get(ORIGIN) is None and await store.logs() == []
        assert await store.compare_and_set(None, st(5))
        assert not await store.compare_and_set(None, st(6))  # the row exists: not from "none"
        assert not await store.compare_and_set(st(4), st(6))  # another size than stored
        assert not await store.compare_and_set(st(5, "fork"), st(6))  # same size, other root
        assert await store.compare_and_set(st(5), st(9))
        assert await store.get(ORIGIN) == st(9)
    finally:
        await engine.dispose()
    # (a restart) a new engine reads what was committed
    engine = make_engine(database_url)
    try:
        store = WitnessStore(engine)
        await store.migrate()
        assert await store.logs() == [st(9)]
    finally:
        await engine.dispose()


async def test_concurrent_updates_from_one_state_only_one_wins(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=10) if database_url.startswith("postgresql") else make_engine(
        database_url)
    try:
        store = WitnessStore(engine)
        await store.migrate()
        # From nothing: eight first checkpoints at once, one row.
        firsts = await asyncio.gather(*(store.compare_and_set(None, st(10 + i)) for i in range(8)))
        assert firsts.count(True) == 1
        winner = await store.get(ORIGIN)
        assert winner is not None
        # From one seen state: eight different successors at once, exactly one is written.
        results = await asyncio.gather(*(store.compare_and_set(winner, st(100 + i)) for i in range(8)))
        assert results.count(True) == 1
        final = await store.get(ORIGIN)
        assert final == st(100 + results.index(True))
    finally:
        await engine.dispose()


async def test_evidence_is_kept_listed_and_bounded(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "MAX_EVIDENCE_PER_ORIGIN", 3)
    engine = make_engine(database_url)
    try:
        store = WitnessStore(engine)
        await store.migrate()
        ids = [await store.add_evidence(ev(n)) for n in range(4)]
        assert ids[:3] == sorted(ids[:3]) and None not in ids[:3] and ids[3] is None  # the 4th is not kept
        assert await store.add_evidence(ev(9, "DEV/GOV/1001/ss1/audit")) is not None  # per origin
        rows, total = await store.evidence()
        assert total == 4 and [r.evidence.old_size for r in rows] == [9, 2, 1, 0]  # newest first
        rows, total = await store.evidence(origin=ORIGIN, limit=1, offset=1)
        assert total == 3 and len(rows) == 1 and rows[0].evidence == ev(1)
        doc = rows[0].to_dict()
        assert doc["reason"] == "fork" and doc["note"] == "submitted\n" and len(doc["proof"]) == 2
        assert doc["recorded_at"] == "2026-12-03T09:00:01Z"
    finally:
        await engine.dispose()
