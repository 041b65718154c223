"""The message log as the cross-process backstop of replay protection (gateway.messagelog.store.replay), on
SQLite and PostgreSQL: two stores on one database stand for two processes (workers or nodes) of one server,
each writing its own origin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from test_messagelog_store import rec

from gateway.errors import MessageLogError, ReplayedRequest
from gateway.messagelog.models import records
from gateway.messagelog.store import SqlMessageLogStore, migrate_messagelog
from gateway.messagelog.store.replay import replay_key
from gateway.storage.db import make_engine

pytestmark = pytest.mark.integration

W0, W1 = "DEV/GOV/1002/ss2", "DEV/GOV/1002/ss2/1"  # two workers of ss2
OTHER = "DEV/GOV/1003/ss3"  # another server


def server_request(i: int, *, origin: str, request_id: str | None = None, **changes: Any) -> Any:
    return rec(i, origin=origin, side="server", request_id=request_id or f"req-{i}", **changes)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(database_url)
    await migrate_messagelog(eng)
    yield eng
    await eng.dispose()


@pytest.fixture
async def stores(engine: AsyncEngine) -> AsyncIterator[tuple[SqlMessageLogStore, SqlMessageLogStore]]:
    a, b = SqlMessageLogStore(engine), SqlMessageLogStore(engine)
    yield a, b
    await a.close()
    await b.close()


def test_replay_key_scope() -> None:
    """Only a provider's request record has a key; it names the server, not the origin."""
    assert replay_key(rec(1, side="client")) is None
    assert replay_key(rec(1, side="server", kind="response", status=200)) is None
    key = replay_key(server_request(1, origin=W0))
    assert key is not None and len(key) == 32
    assert replay_key(server_request(2, origin=W1, request_id="req-1")) == key  # another worker, same server
    assert replay_key(server_request(1, origin="DEV/GOV/1002/ss2/node2/3")) == key  # another node
    assert replay_key(server_request(1, origin=OTHER)) != key  # another server
    assert replay_key(server_request(1, origin=W0, request_id="req-2")) != key


async def test_a_request_id_is_logged_once_per_server(stores: tuple[SqlMessageLogStore, SqlMessageLogStore]) -> None:
    a, b = stores
    assert (await a.append(server_request(1, origin=W0))).seq == 0
    with pytest.raises(ReplayedRequest, match="'req-1' was already received") as info:
        await b.append(server_request(1, origin=W1))
    assert info.value.xroad_type == "Server.ServerProxy.ReplayedRequest"
    with pytest.raises(ReplayedRequest):
        await a.append(server_request(1, origin=W0))  # the same process again (its cache would say so first)
    assert await b.size(W1) == 0 and await a.size(W0) == 1  # nothing of the replays stored, no number used
    # what is not a provider's request of this server is not a replay
    await b.append(rec(1, origin=W1, side="client"))  # ss2 as a consumer with the same id
    await b.append(server_request(1, origin=W1, kind="response", status=200))
    await b.append(server_request(1, origin=OTHER))  # another server's log in the same database
    assert await b.size(W1) == 2 and await b.size(OTHER) == 1


async def test_a_replay_fails_only_itself_in_its_batch(
    stores: tuple[SqlMessageLogStore, SqlMessageLogStore],
) -> None:
    a, b = stores
    await a.append(server_request(100, origin=W0))
    # one batch on b: fresh records around a replay of a's, and a duplicate inside the batch itself
    batch = [server_request(i, origin=W1) for i in (1, 2)] + [server_request(3, origin=W1, request_id="req-100")]
    batch += [server_request(4, origin=W1), server_request(5, origin=W1, request_id="req-4"),
              rec(6, origin=W1, side="client")]
    before = b.stats.batches
    results = await asyncio.gather(*(b.append(r) for r in batch), return_exceptions=True)
    assert b.stats.batches == before + 1 and b.stats.failed_batches == 0  # one group commit, not failed
    refused = [i for i, r in enumerate(results) if isinstance(r, ReplayedRequest)]
    assert refused == [2, 4], results
    # the others got dense sequence numbers in queue order, and are stored exactly so
    assert [r.seq for r in results if not isinstance(r, BaseException)] == [0, 1, 2, 3]
    stored = [s.decode() for s in await b.read(W1)]
    assert [(r.request_id, r.side) for r in stored] == [
        ("req-1", "server"), ("req-2", "server"), ("req-4", "server"), ("req-6", "client")]


async def test_a_failure_that_is_no_replay_fails_the_batch(
    engine: AsyncEngine, stores: tuple[SqlMessageLogStore, SqlMessageLogStore],
) -> None:
    """The backstop explains replays only: a batch that fails otherwise fails closed as before (here: a row
    another writer put at the next sequence number of our origin)."""
    a, b = stores
    await b.append(server_request(1, origin=W1))
    await a.append(server_request(2, origin=W1))  # a second writer of one origin (what the origin claim forbids)
    results = await asyncio.gather(b.append(server_request(3, origin=W1)), b.append(server_request(4, origin=W1)),
                                   return_exceptions=True)
    assert all(isinstance(r, MessageLogError) and not isinstance(r, ReplayedRequest) for r in results), results
    async with engine.connect() as conn:
        keys = (await conn.execute(sa.select(sa.func.count()).select_from(records)
                                   .where(records.c.replay_key.is_not(None)))).scalar_one()
    assert keys == 2  # only the two committed requests hold a key
