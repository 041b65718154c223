"""The pass-through adapter in front of a real upstream HTTP service, both on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.passthrough import PassthroughAdapter
from adapters.server import RunningAdapters, start_adapters
from gateway.errors import ConfigError

pytestmark = pytest.mark.integration

UPSTREAM_OPENAPI = {"openapi": "3.0.3", "info": {"title": "Upstream's own", "version": "1"}, "paths": {}}


@dataclass
class Upstream:
    url: str
    release: asyncio.Event  # lets the /slow handler finish at teardown
    seen_paths: list[str]


async def _echo(request: web.Request) -> web.Response:
    digest, size = hashlib.sha256(), 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return web.json_response(
        {
            "method": request.method,
            "raw_path": request.rel_url.raw_path,
            "raw_query": request.rel_url.raw_query_string,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_sha256": digest.hexdigest(),
            "body_len": size,
            "chunked": request.headers.get("Transfer-Encoding") == "chunked",
        },
        headers={"X-Upstream": "yes", "Set-Cookie": "session=abc; Path=/"},
    )


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    release = asyncio.Event()
    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(request.rel_url.raw_path)
        return await handler(request)  # type: ignore[no-any-return]

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/api/elsewhere?x=1"})

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(b"hello " * 1000),
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
        )

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await resp.prepare(request)
        for i in range(64):
            await resp.write(bytes([i]) * 65536)
        await resp.write_eof()
        return resp

    async def own_openapi(request: web.Request) -> web.Response:
        return web.json_response(UPSTREAM_OPENAPI)

    app = web.Application(middlewares=[record])
    app.router.add_get("/api/redirect", redirect)
    app.router.add_get("/api/slow", slow)
    app.router.add_get("/api/gzip", gzipped)
    app.router.add_get("/api/big", big)
    app.router.add_get("/api/openapi.json", own_openapi)
    app.router.add_route("*", "/api/{tail:.*}", _echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Upstream(url=f"http://127.0.0.1:{port}/api", release=release, seen_paths=seen)
    finally:
        release.set()
        await runner.cleanup()


@dataclass
class Proxy:
    running: RunningAdapters
    http: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return self.running.base_url + path


@pytest.fixture
async def proxy(upstream: Upstream, tmp_path: Path) -> AsyncIterator[Proxy]:
    doc = {"openapi": "3.1.0", "info": {"title": "Legacy API", "version": "2"}, "paths": {"/things": {}}}
    (tmp_path / "openapi.json").write_text(json.dumps(doc))
    adapters = {
        "legacy": PassthroughAdapter(
            name="legacy", base_url=upstream.url, openapi=str(tmp_path / "openapi.json"), timeout_seconds=0.3
        ),
        "plain": PassthroughAdapter(name="plain", base_url=upstream.url + "/"),
    }
    running = await start_adapters(adapters, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as http:
            yield Proxy(running=running, http=http)
    finally:
        await running.close()


async def test_method_path_query_body_and_headers_are_forwarded(proxy: Proxy) -> None:
    body = b'{"name": "M\xc3\xa4gi"}'
    headers = {
        "X-Road-Client": "DEV/GOV/1234/client",
        "X-Road-Id": "DEV-5e1b6c7a",
        "X-Road-UserId": "EE38001010000",
        "X-Custom": "kept",
        "Content-Type": "application/json",
        "Connection": "X-Hop",
        "X-Hop": "dropped",
    }
    async with proxy.http.put(
        proxy.url("/legacy/things/a%2Fb/%C3%A4?q=1&q=%20two&empty="), data=body, headers=headers
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Upstream"] == "yes"
        echo = await resp.json()
    assert echo["method"] == "PUT"
    assert echo["raw_path"] == "/api/things/a%2Fb/%C3%A4"
    assert echo["raw_query"] == "q=1&q=%20two&empty="
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    got = {k.lower(): v for k, v in echo["headers"]}
    for name in ("X-Road-Client", "X-Road-Id", "X-Road-UserId", "X-Custom", "Content-Type"):
        assert got[name.lower()] == headers[name]
    assert "x-hop" not in got
    assert got["host"] != proxy.running.base_url.removeprefix("http://")  # the upstream's own Host


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PATCH", "OPTIONS"])
async def test_every_method_passes(proxy: Proxy, method: str) -> None:
    async with proxy.http.request(method, proxy.url("/plain/x")) as resp:
        assert resp.status == 200
        assert (await resp.json())["method"] == method


async def test_large_bodies_stream_both_ways(proxy: Proxy) -> None:
    payload = bytes(range(256)) * (12 * 4096)  # 12 MiB, more than aiohttp's default client_max_size

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 1 << 20):
            yield payload[i : i + (1 << 20)]

    async with proxy.http.post(proxy.url("/plain/upload"), data=chunks()) as resp:
        echo = await resp.json()
    assert echo["body_len"] == len(payload)
    assert echo["body_sha256"] == hashlib.sha256(payload).hexdigest()
    async with proxy.http.get(proxy.url("/plain/big")) as resp:
        data = await resp.read()
    assert data == b"".join(bytes([i]) * 65536 for i in range(64))


async def test_redirect_is_passed_back_not_followed(proxy: Proxy, upstream: Upstream) -> None:
    async with proxy.http.get(proxy.url("/legacy/redirect"), allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "/api/elsewhere?x=1"
    assert upstream.seen_paths == ["/api/redirect"]


async def test_compressed_body_passes_unchanged(proxy: Proxy) -> None:
    async with proxy.http.get(proxy.url("/legacy/gzip"), headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await resp.read()) == b"hello " * 1000


async def test_cookies_are_not_kept_between_callers(proxy: Proxy) -> None:
    async with proxy.http.get(proxy.url("/legacy/one")) as resp:
        assert resp.headers["Set-Cookie"].startswith("session=abc")
    proxy.http.cookie_jar.clear()
    async with proxy.http.get(proxy.url("/legacy/two")) as resp:
        echo = await resp.json()
    assert "cookie" not in {k.lower() for k, _ in echo["headers"]}


async def test_static_openapi_is_served_else_forwarded(proxy: Proxy) -> None:
    async with proxy.http.get(proxy.url("/legacy/openapi.json")) as resp:
        assert (await resp.json())["info"]["title"] == "Legacy API"
    async with proxy.http.get(proxy.url("/plain/openapi.json")) as resp:
        assert await resp.json() == UPSTREAM_OPENAPI


async def test_upstream_down_is_502_json(free_port: int) -> None:
    adapter = PassthroughAdapter(name="down", base_url=f"http://127.0.0.1:{free_port}/api")
    running = await start_adapters({"down": adapter}, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{running.urls['down']}/x") as resp:
            assert resp.status == 502
            assert "X-Road-Error" not in resp.headers
            body = await resp.json()
    finally:
        await running.close()
    assert body["type"] == "BadGateway"
    assert body["message"] == "the upstream of service 'down' is unreachable"
    assert str(free_port) not in body["message"]


async def test_upstream_that_accepts_but_never_answers_is_504(proxy: Proxy) -> None:
    async with proxy.http.get(proxy.url("/legacy/slow")) as resp:
        assert resp.status == 504
        body = await resp.json()
    assert body["type"] == "GatewayTimeout"
    assert body["message"] == "the upstream of service 'legacy' did not answer in time"


async def test_upstream_closing_mid_body_breaks_the_connection() -> None:
    # A raw upstream that promises 1000 bytes, sends 10 and hangs up.
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    running = await start_adapters(
        {"cut": PassthroughAdapter(name="cut", base_url=f"http://127.0.0.1:{port}")}
    )
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{running.urls['cut']}/x") as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    finally:
        await running.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "ftp://x/"}, "base_url must be an http(s) URL without query"),
        ({"base_url": "http://x/?a=1"}, "base_url must be an http(s) URL without query"),
        ({"base_url": "/relative"}, "base_url must be an http(s) URL without query"),
        ({"base_url": "http://x", "name": "bad/name"}, "adapter name 'bad/name' must match"),
    ],
)
def test_bad_passthrough_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        PassthroughAdapter(**{"name": "p", **kwargs})
    assert message in info.value.message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"not json", "cannot read"),
        (b'{"swagger": "2.0"}', "not an OpenAPI 3 document"),
        (b"[]", "not an OpenAPI 3 document"),
    ],
)
async def test_bad_openapi_document_refuses_to_start(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "doc.json"
    if content is not None:
        path.write_bytes(content)
    adapter = PassthroughAdapter(name="p", base_url="http://127.0.0.1:9", openapi=str(path))
    with pytest.raises(ConfigError) as info:
        await start_adapters({"p": adapter})
    assert message in info.value.message


def test_free_port_fixture_port_is_closed(free_port: int) -> None:
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", free_port)) != 0


async def test_encoded_mount_name_does_not_decode_the_rest_twice(proxy: Proxy) -> None:
    async with proxy.http.get(proxy.url("/%70lain/a%252Fb")) as resp:
        assert resp.status == 200
        assert (await resp.json())["raw_path"] == "/api/a%252Fb"
