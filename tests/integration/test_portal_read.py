"""The portal reads a findUsage answer whole, however it arrives in chunks, and refuses one past its bound
(gateway.portal.app.read_bounded; real loopback HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from gateway.errors import PeerError
from gateway.portal.app import read_bounded

pytestmark = pytest.mark.integration

CHUNK = b"x" * 100_000


async def chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(3):
        await response.write(CHUNK)
    await response.write_eof()
    return response


@pytest_asyncio.fixture
async def url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/", chunked)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_an_answer_in_many_chunks_is_read_whole(url: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert await read_bounded(r, 300_000, "the answer") == CHUNK * 3


async def test_an_answer_past_the_bound_is_refused(url: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        with pytest.raises(PeerError, match="the answer is larger than 250000 bytes"):
            await read_bounded(r, 250_000, "the answer")
