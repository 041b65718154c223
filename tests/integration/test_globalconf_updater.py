"""The global configuration client over real HTTP on 127.0.0.1: AiohttpFetcher limits, an unreachable
central server, the on-disk cache across restarts, and atomic replacement."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from globalconf_sim import GlobalConfSimulator

from gateway.errors import GlobalConfDownloadFailed, PeerError
from gateway.globalconf.anchor import Anchor, anchor_hash
from gateway.globalconf.fetcher import AiohttpFetcher
from gateway.globalconf.updater import CACHE_FILE, GlobalConfUpdater

DOWNLOAD_FAILED = GlobalConfDownloadFailed.type_name()

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 13, 0, 0, tzinfo=UTC)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def http_server(routes: Mapping[str, Handler]) -> AsyncIterator[str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound but not listening: connections are refused for sure."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
async def fetcher() -> AsyncIterator[AiohttpFetcher]:
    f = AiohttpFetcher(timeout_seconds=5)
    yield f
    await f.close()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_end_to_end_over_http(tmp_path: Path, fetcher: AiohttpFetcher, closed_port: int) -> None:
    sim = GlobalConfSimulator(now=NOW)
    clock = Clock(NOW)
    async with sim.http() as base:
        sim.urls = [f"{base}/globalconf"]
        # The operator downloads the anchor and compares its hash out of band.
        anchor_bytes = await fetcher.fetch(f"{base}/anchor")
        assert anchor_hash(anchor_bytes) == anchor_hash(sim.anchor_bytes())
        anchor = Anchor.from_bytes(anchor_bytes)

        up = GlobalConfUpdater(anchor, tmp_path, fetcher, clock=clock)
        seen: list[int] = []
        up.on_update(lambda c: seen.append(c.version))
        result = await up.refresh()
        assert (result.accepted, result.changed, result.version) == (True, True, 1)
        assert (tmp_path / CACHE_FILE).read_bytes() == sim.published

        sim.publish()
        assert (await up.refresh()).version == 2
        assert seen == [1, 2]

        # A tampered publication is refused; the cache file is untouched.
        good = (tmp_path / CACHE_FILE).read_bytes()
        sim.publish()
        sim.serve(sim.published.replace(b"127.0.0.1:5502", b"127.0.0.1:6666"))
        result = await up.refresh()
        assert not result.accepted and "signature is invalid" in result.errors[0]
        assert (tmp_path / CACHE_FILE).read_bytes() == good

    # The central server is gone (its port refuses connections): the last good copy is kept.
    down = Anchor.from_bytes(sim.anchor_bytes(urls=[f"http://127.0.0.1:{closed_port}/globalconf"]))
    up.replace_anchor(down)
    clock.now = NOW + timedelta(minutes=1)
    result = await up.refresh()
    assert not result.accepted and result.version == 2
    assert result.errors[0].startswith(f"download of http://127.0.0.1:{closed_port}/globalconf failed: ")
    st = up.status()
    assert st.version == 2 and st.last_error == result.errors[0] and st.last_success_at == NOW
    assert up.require_valid().version == 2
    assert (tmp_path / CACHE_FILE).read_bytes() == good

    # Restart while the central server is still down: the new instance serves from the cache.
    restarted = GlobalConfUpdater(down, tmp_path, fetcher, clock=clock)
    conf = restarted.load_cached()
    assert conf is not None and conf.version == 2
    assert not (await restarted.refresh()).accepted
    assert restarted.require_valid().version == 2


async def _body(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * 100, content_type="application/json")


async def _chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(3):
        await response.write(b"y" * 40)
    await response.write_eof()
    return response


async def _missing(request: web.Request) -> web.Response:
    return web.Response(status=404, text="no such file")


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/body")


FETCH_ERRORS: list[tuple[str, str, int, str]] = [
    ("over the limit (Content-Length)", "/body", 50, "is 100 bytes; at most 50 are accepted"),
    ("over the limit (chunked)", "/chunked", 100, "is larger than 100 bytes"),
    ("non-200", "/missing", 1000, "failed: HTTP 404 Not Found"),
    ("redirect not followed", "/redirect", 1000, "failed: HTTP 302 Found"),
]


@pytest.mark.parametrize(("path", "max_bytes", "expected"), [f[1:] for f in FETCH_ERRORS],
                         ids=[f[0] for f in FETCH_ERRORS])
async def test_fetch_refusals(fetcher: AiohttpFetcher, path: str, max_bytes: int, expected: str) -> None:
    routes = {"/body": _body, "/chunked": _chunked, "/missing": _missing, "/redirect": _redirect}
    async with http_server(routes) as base:
        with pytest.raises(PeerError) as info:
            await fetcher.fetch(f"{base}{path}", max_bytes=max_bytes)
    assert info.value.message.startswith(f"download of {base}{path} ")
    assert expected in info.value.message
    assert info.value.xroad_type == DOWNLOAD_FAILED


async def test_fetch_within_limits(fetcher: AiohttpFetcher) -> None:
    async with http_server({"/body": _body, "/chunked": _chunked}) as base:
        assert await fetcher.fetch(f"{base}/body", max_bytes=100) == b"x" * 100
        assert await fetcher.fetch(f"{base}/chunked", max_bytes=120) == b"y" * 120


async def test_fetch_timeout() -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    fetcher = AiohttpFetcher(timeout_seconds=0.2)
    try:
        async with http_server({"/hang": hang}) as base:
            with pytest.raises(PeerError, match=r"failed: (Connection|Server)?TimeoutError") as info:
                await fetcher.fetch(f"{base}/hang")
            release.set()
        assert info.value.xroad_type == DOWNLOAD_FAILED
    finally:
        await fetcher.close()


async def test_truncated_download(fetcher: AiohttpFetcher, tmp_path: Path) -> None:
    """The server promises more bytes than it sends and closes the connection."""
    sim = GlobalConfSimulator(now=NOW)
    body = sim.published

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/globalconf"
    try:
        with pytest.raises(PeerError, match="ClientPayloadError") as info:
            await fetcher.fetch(url)
        assert info.value.message.startswith(f"download of {url} failed: ")

        up = GlobalConfUpdater(sim.anchor(urls=[url]), tmp_path, fetcher, clock=lambda: NOW)
        result = await up.refresh()
        assert not result.accepted and "ClientPayloadError" in result.errors[0]
        assert not (tmp_path / CACHE_FILE).exists()
    finally:
        server.close()
        await server.wait_closed()
