"""The transparency blind index (``messagelog_usage_index``, docs/transparency.md section 3) on SQLite and
PostgreSQL, and in memory: rows queued and written in batches, found by subject and subsystem, newest first,
embargoed ones hidden until their date, per-client counts, the period, and a failed write counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.messagelog.store import MemoryMessageLogStore, SqlMessageLogStore, migrate_messagelog
from gateway.storage.db import make_engine
from gateway.transparency.index import UsageIndex
from gateway.transparency.records import IndexRow, blind_index

pytestmark = pytest.mark.integration

KEY = b"k" * 32
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CONSUMER, PROVIDER, OTHER = "DEV/GOV/1001/consumer", "DEV/GOV/1002/registry", "DEV/GOV/1003/police"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(database_url)
    await migrate_messagelog(eng)
    yield eng
    await eng.dispose()


def row(
    subject: str,
    seq: int,
    *,
    side: str = "server",
    client: str = CONSUMER,
    minutes: int = 0,
    until: datetime | None = None,
) -> IndexRow:
    return IndexRow(
        origin="DEV/GOV/1002/ss2",
        seq=seq,
        subject_index=blind_index(KEY, subject),
        salt=bytes([seq]) * 16,
        created=T0 + timedelta(minutes=minutes),
        side=side,  # type: ignore[arg-type]
        client=client,
        provider=PROVIDER,
        embargo_until=until,
    )


async def check(index: UsageIndex) -> None:
    alice, bob = blind_index(KEY, "EE1"), blind_index(KEY, "EE2")
    index.queue([row("EE1", 0), row("EE2", 0)])
    index.queue([row("EE1", 1, minutes=5), row("EE1", 2, minutes=10, client=OTHER, until=T0 + timedelta(days=1))])
    index.queue([row("EE1", 3, side="client", minutes=1)])  # an access record of the consumer, on its own server
    now = T0 + timedelta(hours=1)
    page = await index.find(
        alice, subsystem=PROVIDER, start=T0, end=T0 + timedelta(days=2), now=now, offset=0, limit=10
    )
    assert page.total == 2 and [r.seq for r in page.rows] == [1, 0]  # newest first, the embargoed one hidden
    assert page.rows[0].salt == bytes([1]) * 16
    later = await index.find(
        alice, subsystem=PROVIDER, start=T0, end=T0 + timedelta(days=2), now=T0 + timedelta(days=1), offset=0, limit=1
    )
    assert later.total == 3 and [r.seq for r in later.rows] == [2]  # shown from its date; limit 1
    assert [
        r.seq
        for r in (await index.find(alice, subsystem=CONSUMER, start=T0, end=now, now=now, offset=0, limit=10)).rows
    ] == [3]
    assert (
        await index.find(bob, subsystem=PROVIDER, start=T0 + timedelta(minutes=1), end=now, now=now, offset=0, limit=10)
    ).total == 0  # the period
    counts = {c.client: (c.records, c.embargoed) for c in await index.counts(now)}
    assert counts == {CONSUMER: (3, 0), OTHER: (1, 1)}
    assert await index.period(PROVIDER) == (T0, T0 + timedelta(minutes=10))


async def test_index_in_the_database(engine: AsyncEngine) -> None:
    store = SqlMessageLogStore(engine)
    try:
        await check(UsageIndex(store))
    finally:
        await store.close()


async def test_index_in_memory() -> None:
    await check(UsageIndex(MemoryMessageLogStore()))


async def test_a_failed_write_is_counted_and_the_index_goes_on(engine: AsyncEngine) -> None:
    store = SqlMessageLogStore(engine)
    try:
        index = UsageIndex(store)
        index.queue([row("EE1", 0)])
        index.queue([row("EE1", 0)])  # the same row again: the primary key refuses it
        await index.flush()
        assert index.failures == 1
        index.queue([row("EE1", 1)])
        assert (
            await index.find(
                blind_index(KEY, "EE1"),
                subsystem=PROVIDER,
                start=T0,
                end=T0 + timedelta(days=1),
                now=T0,
                offset=0,
                limit=10,
            )
        ).total == 2
    finally:
        await store.close()
