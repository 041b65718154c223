"""The transparency blind index (``messagelog_usage_index``, docs/transparency.md section 3) on SQLite and
PostgreSQL, and in memory: rows written by the message log's writer in the transaction of their usage record,
found by subject and subsystem, newest first, embargoed ones hidden until their date, per-client counts, the
period; a bad row fails its record's whole batch (nothing of it stored), and the log goes on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import MessageLogError
from gateway.identifiers import ServiceId, SubsystemId
from gateway.messagelog.record import Side
from gateway.messagelog.store import MemoryMessageLogStore, MessageLogStore, SqlMessageLogStore, migrate_messagelog
from gateway.storage.db import make_engine
from gateway.transparency.headers import Transparency
from gateway.transparency.index import UsageIndex, index_rows, row_values
from gateway.transparency.records import UsageEntry, blind_index, usage_entry

pytestmark = pytest.mark.integration

KEY = b"k" * 32
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ORIGIN = "DEV/GOV/1002/ss2"
CONSUMER, PROVIDER, OTHER = "DEV/GOV/1001/consumer", "DEV/GOV/1002/registry", "DEV/GOV/1003/police"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(database_url)
    await migrate_messagelog(eng)
    yield eng
    await eng.dispose()


def entry(
    *subjects: str,
    side: Side = "server",
    client: str = CONSUMER,
    minutes: int = 0,
    until: datetime | None = None,
) -> UsageEntry:
    return usage_entry(
        origin=ORIGIN,
        side=side,
        message_id=f"m-{minutes}-{side}",
        request_id=f"r-{minutes}-{side}",
        client=SubsystemId.parse(client),
        service=ServiceId.parse(f"{PROVIDER}/persons"),
        method="GET",
        path="/1",
        status=200,
        created=T0 + timedelta(minutes=minutes),
        request_hash="h",
        t=Transparency(subjects=subjects, embargo_until=until),
        user_id=None,
        key=KEY,
        signing_cert=b"cert",
        ocsp_response=b"ocsp",
    )


async def log(store: MessageLogStore, e: UsageEntry) -> int:
    """Append ``e``'s record with its index rows, as the proxies do; its sequence number."""
    return (await store.append(e.record, index_rows=index_rows(lambda seq: e.rows(KEY, seq)))).seq


async def check(store: MessageLogStore) -> None:
    index = UsageIndex(store)
    alice, bob = blind_index(KEY, "EE1"), blind_index(KEY, "EE2")
    first = entry("EE1", "EE2")
    assert await log(store, first) == 0
    # one group commit: three records and their rows in one transaction
    seqs = [
        (await f).seq
        for f in [
            store.start(e.record, index_rows=index_rows(lambda seq, e=e: e.rows(KEY, seq)))  # type: ignore[misc]
            for e in (
                entry("EE1", minutes=5),
                entry("EE1", minutes=10, client=OTHER, until=T0 + timedelta(days=1)),
                entry("EE1", side="client", minutes=1),  # an access record of the consumer, on its own server
            )
        ]
    ]
    assert seqs == [1, 2, 3]
    now = T0 + timedelta(hours=1)
    page = await index.find(
        alice, subsystem=PROVIDER, start=T0, end=T0 + timedelta(days=2), now=now, offset=0, limit=10
    )
    assert page.total == 2 and [r.seq for r in page.rows] == [1, 0]  # newest first, the embargoed one hidden
    assert page.rows[1].salt == first.salts[0] and page.rows[1].origin == ORIGIN
    later = await index.find(
        alice, subsystem=PROVIDER, start=T0, end=T0 + timedelta(days=2), now=T0 + timedelta(days=1), offset=0, limit=1
    )
    assert later.total == 3 and [r.seq for r in later.rows] == [2]  # shown from its date; limit 1
    assert later.rows[0].embargo_until == T0 + timedelta(days=1)
    assert [
        r.seq
        for r in (await index.find(alice, subsystem=CONSUMER, start=T0, end=now, now=now, offset=0, limit=10)).rows
    ] == [3]
    bobs = await index.find(bob, subsystem=PROVIDER, start=T0, end=now, now=now, offset=0, limit=10)
    assert [r.seq for r in bobs.rows] == [0] and bobs.rows[0].salt == first.salts[1]
    assert (
        await index.find(bob, subsystem=PROVIDER, start=T0 + timedelta(minutes=1), end=now, now=now, offset=0, limit=10)
    ).total == 0  # the period
    counts = {c.client: (c.records, c.embargoed) for c in await index.counts(now)}
    assert counts == {CONSUMER: (3, 0), OTHER: (1, 1)}
    assert await index.period(PROVIDER) == (T0, T0 + timedelta(minutes=10))


async def test_index_in_the_database(engine: AsyncEngine) -> None:
    store = SqlMessageLogStore(engine)
    try:
        await check(store)
    finally:
        await store.close()


async def test_index_in_memory() -> None:
    store = MemoryMessageLogStore()
    try:
        await check(store)
    finally:
        await store.close()


async def bad_rows_fail_the_batch(store: MessageLogStore) -> None:
    index = UsageIndex(store)
    good = entry("EE1")
    assert await log(store, good) == 0
    size = await store.size(ORIGIN)
    wrong_seq = entry("EE1", minutes=1)
    cases = {
        # a row naming another record than its own
        "names record 0 of": lambda seq: [row_values(r) for r in wrong_seq.rows(KEY, 0)],
        # a row that is not one of the table's
        "not those of messagelog_usage_index": lambda seq: [{"origin": ORIGIN, "seq": seq}],
    }
    for message, rows in cases.items():
        other = entry("EE2", minutes=2)  # an innocent record of the same batch fails with it
        together = store.start(other.record)
        with pytest.raises(MessageLogError, match=message):
            await store.append(wrong_seq.record, index_rows=rows)
        with pytest.raises(MessageLogError, match=message):
            await together
        assert await store.size(ORIGIN) == size  # nothing of the batch is stored
    # a row the database refuses (the primary key: the same subject, origin and sequence number twice)
    twice = entry("EE3", minutes=3)
    with pytest.raises(MessageLogError):
        await store.append(twice.record, index_rows=lambda seq: [row_values(r) for r in twice.rows(KEY, seq) * 2])
    assert await store.size(ORIGIN) == size
    # and the log goes on: the next record and its row commit
    assert await log(store, entry("EE1", minutes=4)) == size
    found = await index.find(
        blind_index(KEY, "EE1"), subsystem=PROVIDER, start=T0, end=T0 + timedelta(days=1), now=T0, offset=0, limit=10
    )
    assert [r.seq for r in found.rows] == [size, 0]
    assert (
        await index.find(
            blind_index(KEY, "EE3"), subsystem=PROVIDER, start=T0, end=T0 + timedelta(days=1), now=T0, offset=0,
            limit=10,
        )
    ).total == 0


async def test_a_bad_index_row_fails_its_batch_closed_in_the_database(engine: AsyncEngine) -> None:
    store = SqlMessageLogStore(engine)
    try:
        await bad_rows_fail_the_batch(store)
    finally:
        await store.close()


async def test_a_bad_index_row_fails_its_batch_closed_in_memory() -> None:
    store = MemoryMessageLogStore()
    try:
        await bad_rows_fail_the_batch(store)
    finally:
        await store.close()
