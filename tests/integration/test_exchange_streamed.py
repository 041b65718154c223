"""Bodies over the spool's memory threshold (or chunked) stream through both security servers
(docs/performance.md section 9): spooled, hashed as they arrive, logged apart, sent and answered from the spool.

The federation's servers allow bodies of 64 MiB but hold only 4 MiB of bodies in memory at once
(``max_inflight_body_bytes``), which the whole-body path could never do for a 20 MiB body. Checked, on SQLite and
PostgreSQL: the bodies arrive as sent, both logs hold both bodies apart, byte for byte and leaf hash for leaf
hash; the invariant of docs/messagelog.md section 11 holds (the provider's record durable before the service
gets a byte, fail closed on either side); too large a body is refused; body logging off logs digests only.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from exchange_kit import CONSUMER, PROBE, FailingLog, Probe, database_urls, probed_federation, swapped_log
from yarl import URL

from gateway.dev.demo import Federation
from gateway.proxy.spool import MEMORY_LIMIT
from gateway.server.runtime import SecurityServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

MAX_BODY = 64 * 2**20  # bytes: the servers' max_body_bytes and max_loggable_body_bytes
BUDGET = 4 * 2**20  # bytes: their max_inflight_body_bytes
BIG = 20 * 2**20  # bytes of a request body here: five times the budget


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Federation, Probe]]:
    tmp = tmp_path_factory.mktemp("streamed")
    overrides = {"max_body_bytes": MAX_BODY, "max_loggable_body_bytes": MAX_BODY, "max_inflight_body_bytes": BUDGET}
    async with (
        database_urls(request.param, tmp, ("central", "ss1", "ss2")) as dbs,
        probed_federation(tmp / "fed", database_urls=dbs, server_overrides=overrides,
                          probe_max_body=MAX_BODY) as world,
    ):
        yield world


def text_body(size: int) -> bytes:
    """``size`` bytes of printable text that differ along the way (the probe echoes the body as JSON text)."""
    unit = b"".join(b"%08d" % i for i in range(size // 8 + 1))
    return unit[:size]


async def post(server: SecurityServer, body: bytes, *, chunked: bool, message_id: str) -> tuple[int, dict[str, str],
                                                                                                  bytes]:
    """POST ``body`` to the probe through ``server``'s client port (chunked, or with Content-Length)."""

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 256 * 1024):
            yield body[i:i + 256 * 1024]

    async with aiohttp.ClientSession(auto_decompress=False) as session, session.post(
        URL(f"{server.client_url}/r1/{PROBE}/upload", encoded=True), data=chunks() if chunked else io.BytesIO(body),
        headers={"X-Road-Client": CONSUMER, "X-Road-Id": message_id, "Content-Type": "text/plain"},
    ) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def stored_bodies(server: SecurityServer, request_id: str) -> dict[str, bytes | None]:
    """``{kind: body}`` of one exchange's records in ``server``'s log: a body stored apart read back (its
    record's encoding checked against the leaf hash on the way), else the record's own (None: digest only)."""
    assert server.context is not None
    store = server.messagelog
    out: dict[str, bytes | None] = {}
    for stored in await store.read(server.context.origin, limit=10_000):
        record = stored.decode()
        if record.request_id != request_id:
            continue
        if stored.body_ref is None:
            out[record.kind] = record.body
            continue
        async for _ in store.encoded_chunks(stored, check=True):
            pass
        out[record.kind] = b"".join([c async for c in store.body_chunks(stored)])
    return out


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
async def test_a_body_larger_than_the_budget_streams_through_and_both_logs_hold_both_bodies(
    world: tuple[Federation, Probe], chunked: bool,
) -> None:
    fed, probe = world
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    body = text_body(BIG)
    message_id = f"DEV-streamed-{uuid.uuid4()}"
    status, headers, answer = await post(ss1, body, chunked=chunked, message_id=message_id)
    assert status == 200, answer[:300]
    # (1) the service got the body as sent; the caller got the service's answer (an echo of it, as JSON)
    seen = [s for s in probe.seen if s.headers.get("X-Road-Id") == message_id]
    assert len(seen) == 1 and seen[0].body == body
    assert json.loads(answer)["body"] == body.decode()
    # (2) both logs hold both bodies, stored apart, as they passed
    request_id = headers["X-Road-Request-Id"]
    for server in (ss1, ss2):
        assert await stored_bodies(server, request_id) == {"request": body, "response": answer}
        assert server.context is not None
        assert server.context.bodies.used == 0  # every exchange's share given back


async def test_a_body_over_max_body_bytes_is_refused_on_the_spooled_path(world: tuple[Federation, Probe]) -> None:
    fed, probe = world
    message_id = f"DEV-too-large-{uuid.uuid4()}"
    status, headers, answer = await post(fed.server("ss1"), text_body(MAX_BODY + 1), chunked=True,
                                         message_id=message_id)
    assert status == 413, answer[:300]
    assert headers["X-Road-Error"] == "Client.BadRequest"
    assert f"larger than the maximum of {MAX_BODY} bytes" in json.loads(answer)["message"]
    assert not [s for s in probe.seen if s.headers.get("X-Road-Id") == message_id]


async def test_the_provider_logs_a_spooled_request_before_the_service_gets_a_byte(
    world: tuple[Federation, Probe],
) -> None:
    fed, probe = world
    message_id = f"DEV-unlogged-{uuid.uuid4()}"
    async with swapped_log(fed.server("ss2"), FailingLog("request")):
        status, headers, answer = await post(fed.server("ss1"), text_body(BIG), chunked=True,
                                             message_id=message_id)
    assert status == 500, answer[:300]
    assert headers["X-Road-Error"] == "Server.ServerProxy.LoggingFailed"
    assert not [s for s in probe.seen if s.headers.get("X-Road-Id") == message_id]


async def test_an_unwritable_consumer_record_of_a_spooled_request_is_the_answer(
    world: tuple[Federation, Probe],
) -> None:
    fed, _ = world
    message_id = f"DEV-unlogged-consumer-{uuid.uuid4()}"
    async with swapped_log(fed.server("ss1"), FailingLog("request")):
        status, headers, answer = await post(fed.server("ss1"), text_body(2 * MEMORY_LIMIT), chunked=False,
                                             message_id=message_id)
    assert status == 500, answer[:300]
    assert headers["X-Road-Error"] == "Server.ClientProxy.LoggingFailed"


async def test_with_body_logging_off_a_spooled_exchange_logs_digests_only(world: tuple[Federation, Probe]) -> None:
    fed, _ = world
    servers = [fed.server("ss1"), fed.server("ss2")]
    body = text_body(2 * MEMORY_LIMIT)
    for server in servers:
        assert server.context is not None
        server.context.body_logging = False
    try:
        status, headers, answer = await post(servers[0], body, chunked=True, message_id=f"DEV-nobody-{uuid.uuid4()}")
    finally:
        for server in servers:
            assert server.context is not None
            server.context.body_logging = True
    assert status == 200, answer[:300]
    for server in servers:
        assert await stored_bodies(server, headers["X-Road-Request-Id"]) == {"request": None, "response": None}
        assert server.context is not None
        records = [s.decode() for s in await server.messagelog.read(server.context.origin, limit=10_000)]
        digests = {r.kind: r.body_digest for r in records if r.request_id == headers["X-Road-Request-Id"]}
        assert digests["request"] == _digest(body)
        assert digests["response"] == _digest(answer)


def _digest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


async def test_a_small_body_still_takes_the_whole_body_path(world: tuple[Federation, Probe]) -> None:
    fed, _ = world
    body = text_body(MEMORY_LIMIT // 2)
    status, headers, answer = await post(fed.server("ss1"), body, chunked=False,
                                         message_id=f"DEV-small-{uuid.uuid4()}")
    assert status == 200, answer[:300]
    for server in (fed.server("ss1"), fed.server("ss2")):
        assert server.context is not None
        stored = [s for s in await server.messagelog.read(server.context.origin, limit=10_000)
                  if s.decode().request_id == headers["X-Road-Request-Id"]]
        assert [s.body_ref for s in stored] == [None, None]  # in the record, not apart
        assert stored[0].decode().body == body


async def test_a_large_answer_to_a_small_request_streams_back_too(world: tuple[Federation, Probe]) -> None:
    fed, _ = world
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    async with aiohttp.ClientSession(auto_decompress=False) as session, session.get(
        URL(f"{ss1.client_url}/r1/{PROBE}/big/{BIG}/file", encoded=True),
        headers={"X-Road-Client": CONSUMER, "X-Road-Id": f"DEV-big-answer-{uuid.uuid4()}"},
    ) as resp:
        answer = await resp.read()
        status, request_id = resp.status, resp.headers["X-Road-Request-Id"]
    assert status == 200, answer[:300]
    assert answer == b"x" * BIG  # five times the budget: it could only have passed spooled
    for server in (ss1, ss2):
        assert await stored_bodies(server, request_id) == {"request": b"", "response": answer}
        assert server.context is not None
        assert server.context.bodies.used == 0
