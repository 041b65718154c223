"""Finding message-log records by time, client, service, message id and request id
(gateway.messagelog.search), on SQLite, PostgreSQL and the in-memory double: the same answers from each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from test_messagelog_store import NOW, ORIGIN_A, ORIGIN_B, rec

from gateway.identifiers import ServiceId, SubsystemId
from gateway.messagelog.search import RecordQuery, records_since, search_records
from gateway.messagelog.store import MemoryMessageLogStore, MessageLogStore, SqlMessageLogStore, migrate_messagelog
from gateway.storage.db import make_engine

pytestmark = pytest.mark.integration

OTHER_CLIENT = SubsystemId.parse("DEV/GOV/1003/other")
OTHER_SERVICE = ServiceId.parse("DEV/GOV/1002/provider/owners")


@pytest.fixture(params=["sql", "memory"])
async def store(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[MessageLogStore]:
    engine: AsyncEngine | None = None
    s: MessageLogStore
    if request.param == "sql":
        engine = make_engine(database_url)
        await migrate_messagelog(engine)
        s = SqlMessageLogStore(engine)
    else:
        s = MemoryMessageLogStore()
    # ten records a minute apart; every third from another client, every fourth to another service
    for i in range(10):
        await s.append(rec(i, created=NOW + timedelta(minutes=i),
                           **({"client": OTHER_CLIENT} if i % 3 == 0 else {}),
                           **({"service": OTHER_SERVICE} if i % 4 == 0 else {})))
    await s.append(rec(99, origin=ORIGIN_B))  # another origin is never found
    yield s
    await s.close()
    if engine is not None:
        await engine.dispose()


async def seqs(store: MessageLogStore, q: RecordQuery, *, offset: int = 0, limit: int = 100) -> tuple[list[int], int]:
    found, total = await search_records(store, ORIGIN_A, q, offset=offset, limit=limit)
    return [r.seq for r in found], total


@pytest.mark.parametrize(("query", "expected"), [
    (RecordQuery(), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
    (RecordQuery(message_id="DEV-4"), [4]),
    (RecordQuery(request_id="req-7"), [7]),
    (RecordQuery(message_id="DEV-99"), []),
    (RecordQuery(client=str(OTHER_CLIENT)), [9, 6, 3, 0]),
    (RecordQuery(service=str(OTHER_SERVICE)), [8, 4, 0]),
    (RecordQuery(client=str(OTHER_CLIENT), service=str(OTHER_SERVICE)), [0]),
    (RecordQuery(since=NOW + timedelta(minutes=2), until=NOW + timedelta(minutes=5)), [4, 3, 2]),
    (RecordQuery(since=NOW + timedelta(minutes=8)), [9, 8]),
    (RecordQuery(until=NOW), []),
])
async def test_search_newest_first(store: MessageLogStore, query: RecordQuery, expected: list[int]) -> None:
    assert await seqs(store, query) == (expected, len(expected))


async def test_search_pages_and_counts_every_match(store: MessageLogStore) -> None:
    assert await seqs(store, RecordQuery(), offset=2, limit=3) == ([7, 6, 5], 10)
    assert await seqs(store, RecordQuery(client=str(OTHER_CLIENT)), offset=3, limit=3) == ([0], 4)
    assert await seqs(store, RecordQuery(), offset=10, limit=3) == ([], 10)


@pytest.mark.parametrize(("minutes", "expected"), [(-5, 10), (0, 10), (0.5, 9), (7, 3), (9, 1), (9.5, 0), (60, 0)])
async def test_records_since_counts_the_newest(store: MessageLogStore, minutes: float, expected: int) -> None:
    assert await records_since(store, ORIGIN_A, NOW + timedelta(minutes=minutes)) == expected


async def test_records_since_on_an_empty_log() -> None:
    store = MemoryMessageLogStore()
    assert await records_since(store, ORIGIN_A, NOW) == 0
    await store.close()
