"""bench/relay.py, the benchmark's bare two-hop relay: requests and responses pass both hops intact, over one
kept-alive mutual-TLS connection between the hops, and the second hop refuses a client without a certificate.

Real loopback sockets and TLS 1.3 with the certificates ``write_mtls_files`` makes; a few requests, no timing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
from aiohttp import web

pytestmark = pytest.mark.integration

RELAY_PY = Path(__file__).resolve().parents[2] / "bench" / "relay.py"


def _load_relay() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_relay", RELAY_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


relay = _load_relay()


@dataclass
class Chain:
    url: str  # the first hop, plain HTTP
    hop2_port: int  # the second hop, mutual TLS only
    hop1_pool: Any
    hop2_pool: Any
    seen: list[dict[str, Any]]  # what the service received, one entry per request
    files: Any


async def _service(seen: list[dict[str, Any]]) -> tuple[web.AppRunner, int]:
    async def handler(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "target": request.path_qs, "headers": dict(request.headers),
                     "body": await request.read()})
        if request.path == "/empty":
            return web.Response(status=204, headers={"X-Up": "no body"})
        return web.Response(status=201, body=b"made:" + await request.read(), content_type="application/json",
                            headers={"X-Up": "yes", "Keep-Alive": "timeout=5"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    files = relay.write_mtls_files(tmp_path / "tls")
    seen: list[dict[str, Any]] = []
    runner, service_port = await _service(seen)
    hop2, pool2 = await relay.start_hop(host="127.0.0.1", port=0, upstream_host="127.0.0.1",
                                        upstream_port=service_port, server_ssl=relay.server_context(files),
                                        upstream_ssl=None)
    hop2_port = hop2.sockets[0].getsockname()[1]
    hop1, pool1 = await relay.start_hop(host="127.0.0.1", port=0, upstream_host="127.0.0.1", upstream_port=hop2_port,
                                        server_ssl=None, upstream_ssl=relay.client_context(files))
    url = f"http://127.0.0.1:{hop1.sockets[0].getsockname()[1]}"
    try:
        yield Chain(url=url, hop2_port=hop2_port, hop1_pool=pool1, hop2_pool=pool2, seen=seen, files=files)
    finally:
        for server, pool in ((hop1, pool1), (hop2, pool2)):
            server.close()
            pool.close()
            await server.wait_closed()
        await runner.cleanup()


async def test_requests_and_responses_pass_both_hops_on_kept_alive_connections(chain: Chain) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{chain.url}/items?page=2", headers={"X-Test": "v", "Connection": "X-Drop",
                                                                   "X-Drop": "hop only"}) as resp:
            assert (resp.status, resp.headers["X-Up"], await resp.read()) == (201, "yes", b"made:")
            assert "Keep-Alive" not in resp.headers  # hop-by-hop: not relayed
        async with session.post(f"{chain.url}/items", data=b"x" * 70_000) as resp:
            assert (resp.status, await resp.read()) == (201, b"made:" + b"x" * 70_000)

        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"ab", b"cd"):
                yield part

        async with session.put(f"{chain.url}/items/7", data=chunks()) as resp:  # chunked towards the first hop
            assert (resp.status, await resp.read()) == (201, b"made:abcd")
        async with session.delete(f"{chain.url}/empty") as resp:
            assert (resp.status, resp.headers["X-Up"], await resp.read()) == (204, "no body", b"")
    get, post, put, delete = chain.seen
    assert (get["method"], get["target"], get["headers"]["X-Test"]) == ("GET", "/items?page=2", "v")
    assert "X-Drop" not in get["headers"]  # named in Connection: hop-by-hop
    assert (post["method"], len(post["body"]), post["headers"]["Content-Length"]) == ("POST", 70_000, "70000")
    assert (put["body"], put["headers"]["Content-Length"], "Transfer-Encoding" in put["headers"]) == (
        b"abcd", "4", False)
    assert delete["method"] == "DELETE"
    # one after the other, so each hop kept one upstream connection alive for all four requests
    assert (chain.hop1_pool.opened, chain.hop2_pool.opened) == (1, 1)


async def test_second_hop_requires_a_client_certificate(chain: Chain) -> None:
    no_cert = ssl.create_default_context(cafile=str(chain.files.ca))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"https://localhost:{chain.hop2_port}/items", ssl=no_cert) as resp:
                await resp.read()
        with pytest.raises(aiohttp.ClientError):  # nor plain HTTP
            async with session.get(f"http://127.0.0.1:{chain.hop2_port}/items") as resp:
                await resp.read()
        with_cert = relay.client_context(chain.files)
        async with session.get(f"https://localhost:{chain.hop2_port}/items", ssl=with_cert) as resp:
            assert (resp.status, await resp.read()) == (201, b"made:")
    assert [s["target"] for s in chain.seen] == ["/items"]


async def test_failures_are_answered(chain: Chain) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(chain.url.rsplit(":", 1)[1]))
    writer.write(b"GET /items HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"malformed request" in answer
    # an upstream that refuses connections (a port held by a socket that never listens): 502, with the reason
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead, pool = await relay.start_hop(host="127.0.0.1", port=0, upstream_host="127.0.0.1",
                                           upstream_port=closed.getsockname()[1], server_ssl=None, upstream_ssl=None)
        port = dead.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/x") as resp:
                assert resp.status == 502
                assert "upstream failed" in await resp.text() and "Connect" in await resp.text()
        finally:
            dead.close()
            pool.close()
            await dead.wait_closed()
