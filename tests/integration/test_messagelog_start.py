"""``MessageLogStore.start``: a record queued now, its commit awaited later (docs/messagelog.md section 11), on
SQLite, PostgreSQL and the in-memory double.

The consumer's security server starts its request record before it sends the request and awaits it before it
answers; these tests pin what that relies on: the record joins the batch of the current turn of the event
loop, a cancelled wait withdraws nothing, a failure nobody awaits is not reported as unretrieved, and what can
never be written is refused at once, with nothing queued.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from test_messagelog_store import ORIGIN_A, rec

from gateway.errors import MessageLogError
from gateway.messagelog.store import (
    THREAD_ENCODE_BYTES,
    MemoryMessageLogStore,
    MessageLogStore,
    SqlMessageLogStore,
    migrate_messagelog,
)
from gateway.storage.db import make_engine

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sql", "memory"])
async def store(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[MessageLogStore]:
    """A SQL store on SQLite or PostgreSQL, and the in-memory double (once per backend parameter)."""
    if request.param == "memory":
        memory = MemoryMessageLogStore()
        yield memory
        await memory.close()
        return
    engine: AsyncEngine = make_engine(database_url)
    await migrate_messagelog(engine)
    sql = SqlMessageLogStore(engine)
    try:
        yield sql
    finally:
        await sql.close()
        await engine.dispose()


async def test_records_started_in_one_turn_share_one_commit(store: MessageLogStore) -> None:
    await store.append(rec(0))  # the writer is idle again after this
    before = store.stats.batches
    futures = [store.start(rec(i)) for i in range(1, 6)]  # no await between: one turn of the loop
    results = await asyncio.gather(*futures)
    assert [r.seq for r in results] == [1, 2, 3, 4, 5]
    assert store.stats.batches - before == 1


async def test_a_cancelled_wait_withdraws_nothing(store: MessageLogStore) -> None:
    small = store.start(rec(0))
    large = store.start(rec(1, body=b"\xfe" * (THREAD_ENCODE_BYTES + 1)))  # encoded in a thread, then queued
    waiters = [asyncio.create_task(_wait(f)) for f in (small, large)]
    await asyncio.sleep(0)  # both waiters are waiting (ordering, not timing)
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert all(w.cancelled() for w in waiters)
    await store.close()  # commits everything accepted, the large record too
    stored = await store.read(ORIGIN_A)
    assert sorted(s.decode().message_id for s in stored) == ["DEV-0", "DEV-1"]


async def _wait(future: asyncio.Future[Any]) -> Any:
    return await future


async def test_a_failure_nobody_awaits_is_not_reported_as_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    store = MemoryMessageLogStore()
    try:
        store.fail_with = OSError(28, "No space left on device")
        futures = {store.start(rec(0)), store.start(rec(1, body=b"\xfe" * (THREAD_ENCODE_BYTES + 1)))}
        await asyncio.wait(futures)  # done, and nobody asks for the results
        assert store.stats.failed_batches == 2
        futures.clear()
        gc.collect()  # an unretrieved exception is reported when its future is collected
    finally:
        loop.set_exception_handler(previous)
        await store.close()
    assert reported == []


async def test_a_failed_commit_is_the_futures_exception() -> None:
    store = MemoryMessageLogStore()
    store.fail_with = OSError(28, "No space left on device")
    future = store.start(rec(0, side="server"))
    with pytest.raises(MessageLogError) as info:
        await future
    assert info.value.xroad_type == "Server.ServerProxy.LoggingFailed"
    assert info.value.message == "message log write failed: OSError: [Errno 28] No space left on device"
    await store.close()


async def test_what_can_never_be_written_is_refused_at_once(store: MessageLogStore) -> None:
    limit = store.max_body_bytes
    with pytest.raises(MessageLogError) as info:
        store.start(rec(0, body=b"x" * (limit + 1)))
    assert info.value.message == (
        f"message body of {limit + 1} bytes exceeds the loggable maximum of {limit} bytes"
    )
    assert info.value.xroad_type == "Server.ClientProxy.LoggingFailed"
    assert await store.size(ORIGIN_A) == 0  # nothing was queued
    await store.close()
    with pytest.raises(MessageLogError, match="the message log is closed") as closed:
        store.start(rec(1, side="server"))
    assert closed.value.xroad_type == "Server.ServerProxy.LoggingFailed"
