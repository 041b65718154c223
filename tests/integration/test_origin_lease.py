"""Claims on log origins (gateway.server.lease) on SQLite and PostgreSQL: one writer per origin, a second claim
refused loudly with the holder named, a lost PostgreSQL lock refusing exchanges until it is taken back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ConfigError, MessageLogError
from gateway.server.lease import OriginLease, lock_file, lock_key
from gateway.storage.db import make_engine

pytestmark = pytest.mark.integration

ORIGIN = "DEV/GOV/1001/ss1/node2/1"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    e = make_engine(database_url)
    yield e
    await e.dispose()


async def test_one_claim_per_origin(engine: AsyncEngine) -> None:
    first = await OriginLease.acquire(engine, ORIGIN)
    try:
        with pytest.raises(ConfigError) as info:
            await OriginLease.acquire(engine, ORIGIN, wait_seconds=0)
        text = info.value.message
        assert f"log origin {ORIGIN} is already written by another process" in text
        if engine.dialect.name == "sqlite":
            assert first.holder in text  # the lock file names the holder
        else:
            assert "database session" in text
        # other origins of the same server are claimed independently
        other = await OriginLease.acquire(engine, "DEV/GOV/1001/ss1/node2")
        await other.release()
        first.check()  # held: no error
    finally:
        await first.release()
    # released: the origin can be claimed again (as by a restarted worker), and released twice harmlessly
    again = await OriginLease.acquire(engine, ORIGIN)
    await again.release()
    await again.release()


async def test_sqlite_lock_file_says_who_holds_it(tmp_path: Path) -> None:
    database = str(tmp_path / "s.db")
    engine = make_engine(f"sqlite+aiosqlite:///{database}")
    try:
        lease = await OriginLease.acquire(engine, ORIGIN)
        try:
            note = json.loads(lock_file(database, ORIGIN).read_text())
            assert note["origin"] == ORIGIN and note["holder"] == lease.holder and note["since"]
        finally:
            await lease.release()
    finally:
        await engine.dispose()


async def test_sqlite_memory_database_refused() -> None:
    engine = make_engine("sqlite+aiosqlite:///:memory:")
    try:
        with pytest.raises(ConfigError, match="not an in-memory database"):
            await OriginLease.acquire(engine, ORIGIN)
    finally:
        await engine.dispose()


async def _terminate_lock_holder(database_url: str, origin: str) -> None:
    """End the database session that holds ``origin``'s advisory lock (as a lost connection would)."""
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    key = lock_key(origin)
    conn = await asyncpg.connect(dsn)
    try:
        ended = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objsubid = 1 AND classid = $1 AND objid = $2", (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)
        assert ended == 1
    finally:
        await conn.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgres_lost_lock_refuses_until_taken_back(database_url: str, engine: AsyncEngine) -> None:
    lease = await OriginLease.acquire(engine, ORIGIN)
    intruder: OriginLease | None = None
    try:
        # (1) the lock's session ends and another process claims the origin before we notice
        await _terminate_lock_holder(database_url, ORIGIN)
        intruder = await OriginLease.acquire(engine, ORIGIN, wait_seconds=0)
        await lease.check_now()
        assert lease.lost is not None and "another process holds it now" in lease.lost
        with pytest.raises(MessageLogError, match=f"does not hold log origin {ORIGIN}") as info:
            lease.check()
        assert info.value.xroad_type.endswith("LoggingFailed")
        # (2) the other process goes: the next check takes the origin back and exchanges go on
        await intruder.release()
        intruder = None
        await lease.check_now()
        assert lease.lost is None
        lease.check()
        # (3) a lost session with nobody else waiting: taken back in the same round
        await _terminate_lock_holder(database_url, ORIGIN)
        await lease.check_now()
        assert lease.lost is None
        with pytest.raises(ConfigError, match="already written by another process"):
            await OriginLease.acquire(engine, ORIGIN, wait_seconds=0)
    finally:
        if intruder is not None:
            await intruder.release()
        await lease.release()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgres_claim_waits_for_the_holder_to_go(engine: AsyncEngine) -> None:
    """A node restarted while its old session still holds the lock (a machine that vanished) gets its origin
    once the old session ends, instead of failing."""
    old = await OriginLease.acquire(engine, ORIGIN)
    waiting, go_on = asyncio.Event(), asyncio.Event()

    async def pause(_seconds: float) -> None:  # the claim's retry pause: it found the origin held
        waiting.set()
        await go_on.wait()

    claim = asyncio.create_task(OriginLease.acquire(engine, ORIGIN, wait_seconds=60, pause=pause))
    try:
        await asyncio.wait_for(waiting.wait(), 30)
        await old.release()  # the old session ends
        go_on.set()
        new = await asyncio.wait_for(claim, 30)
        new.check()
        await new.release()
    finally:
        claim.cancel()
        await old.release()
