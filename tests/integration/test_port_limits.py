"""The data-path ports' own limits, on a running federation: what the HTTP layer refuses before a handler runs
carries X-Road's error form on the client-facing ports (plain and HTTPS) and the server-to-server port; the
header timeout, the connection limit and the header-size limit are ``[server]`` settings; slow-header
connections are closed while good requests are served; one client's exchanges in progress are bounded (429);
large bodies are hashed off the event loop and still pass byte for byte.

The federation runs with small limits (:data:`LIMITS`); real sockets, real TLS with the servers' own
certificates, SQLite.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import pytest
import pytest_asyncio
from exchange_kit import CONSUMER, PROBE, Probe, auth_ssl, call, probed_federation, records
from http_kit import Raw, read_response, serving
from waiting import wait_for_condition

from gateway.dev.demo import Federation
from gateway.errors import CLIENT_PROXY, SERVER_PROXY, ConfigError
from gateway.proxy.common import OFF_LOOP_HASH_BYTES, body_hashes, body_sha256, refusal_renderer
from gateway.proxy.http import Request, Response
from gateway.server.runtime import SecurityServer
from gateway.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

LIMITS = {"header_timeout_seconds": 1.0, "max_connections": 12, "max_header_bytes": 16384,
          "max_client_exchanges": 2, "max_uri_bytes": 1024}


class World(NamedTuple):
    """The federation with small port limits, and the probe service behind ss2."""

    fed: Federation
    probe: Probe

    @property
    def ss1(self) -> SecurityServer:  # the consumer's server: its client ports
        return self.fed.server("ss1")

    @property
    def ss2(self) -> SecurityServer:  # the provider's: its server port
        return self.fed.server("ss2")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with probed_federation(tmp_path_factory.mktemp("port-limits") / "fed", server_overrides=LIMITS) as pair:
        yield World(*pair)


# ------------------------------------------------------------------------------------------ helpers


def _address(url: str) -> tuple[str, int]:
    host, _, port = url.rpartition("//")[2].rpartition(":")
    return host, int(port)


async def connect(world: World, port: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to ss1's client port (``client``), its HTTPS port (``https``, pinning the internal
    certificate) or ss2's server port (``server``, presenting ss1's authentication certificate)."""
    if port == "client":
        return await asyncio.open_connection(*_address(world.ss1.client_url))
    if port == "https":
        ctx = ssl.create_default_context(cafile=str(world.ss1.files.internal_cert))
        return await asyncio.open_connection(*_address(world.ss1.client_https_url), ssl=ctx)
    host, _, number = world.ss2.server_address.rpartition(":")
    return await asyncio.open_connection(host, int(number), ssl=auth_ssl(world.ss1, world.fed.ca),
                                         server_hostname=None)


async def exchange_raw(world: World, port: str, data: bytes) -> tuple[Raw, bytes]:
    """Send ``data`` as it is; the response, and what follows it until the server closes the connection."""
    reader, writer = await connect(world, port)
    try:
        writer.write(data)
        await writer.drain()
        resp = await read_response(reader)
        rest = await reader.read()  # the layer's refusals close the connection
        return resp, rest
    finally:
        writer.close()


def assert_xroad_error(resp: Raw, status: int, xroad_type: str, contains: str) -> None:
    assert resp.status == status, (resp.status, resp.body[:300])
    assert resp.header("X-Road-Error") == xroad_type
    assert resp.header("Content-Type") == "application/json;charset=utf-8"
    assert resp.header("Connection") == "close"
    doc = json.loads(resp.body)
    assert doc["type"] == xroad_type and contains in doc["message"] and doc["detail"], doc


# ------------------------------------------------------------------------------------------ refusals of the layer


_SIDE_TYPE = {"client": "ClientProxy", "https": "ClientProxy", "server": "ServerProxy"}
_BAD = [
    ("malformed", b"GET /r1/x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
     "Client.BadRequest", "malformed request"),
    ("target-too-long", b"GET /r1/" + b"a" * 1100 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "Client.BadRequest",
     "request target longer than 1024 bytes"),
    ("headers-too-large", b"GET /r1/x HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 16400 + b"\r\n\r\n", 431,
     "Client.BadRequest", "request header block larger than 16384 bytes"),
]


@pytest.mark.parametrize("port", ["client", "https", "server"])
@pytest.mark.parametrize(("case", "data", "status", "xroad_type", "contains"), _BAD, ids=[c[0] for c in _BAD])
async def test_a_request_the_layer_refuses_is_answered_in_xroad_error_form(
    world: World, port: str, case: str, data: bytes, status: int, xroad_type: str, contains: str,
) -> None:
    resp, rest = await exchange_raw(world, port, data)
    assert_xroad_error(resp, status, xroad_type, contains)
    assert rest == b""  # and the connection closed


@pytest.mark.parametrize("port", ["client", "server"])
async def test_a_header_block_not_complete_in_time_is_408_in_xroad_error_form(world: World, port: str) -> None:
    resp, rest = await exchange_raw(world, port, b"GET /r1/DEV/GOV/1002/registry/probe HTTP/1.1\r\nX-Half: ")
    assert_xroad_error(resp, 408, "Client.BadRequest", "request header block not complete within 1 s")
    assert rest == b""


async def test_slow_header_connections_are_closed_after_the_header_timeout_while_good_requests_pass(
    world: World,
) -> None:
    """Slowloris: a bounded number of connections send their header block a byte at a time, never ending it."""
    answers: list[Raw | None] = []  # None: the server closed the connection under a byte still being sent

    async def slow_client() -> None:
        reader, writer = await connect(world, "client")
        answer = asyncio.create_task(read_response(reader))
        resp: Raw | None = None  # None: a byte sent as the server closed, whose reset overtook its answer
        try:
            for byte in b"GET /r1/DEV/GOV/1002/registry/probe HTTP/1.1\r\nX-Slow: " + b"s" * 400:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.wait([answer], timeout=0.05)  # a byte every 50 ms until the server answers
                if answer.done():
                    break
            else:
                raise AssertionError("the slow connection was not closed")
            resp = answer.result()
            assert await reader.read() == b""  # then the server closed the connection
        except ConnectionResetError:
            pass
        answers.append(resp)
        answer.cancel()
        writer.close()

    slow = [asyncio.create_task(slow_client()) for _ in range(6)]
    # good requests are served meanwhile
    while not all(t.done() for t in slow):
        answer = await call(world.ss1, PROBE + "/good", headers={"X-Road-Id": f"DEV-good-{uuid.uuid4()}"})
        assert answer.status == 200, answer.body[:300]
        await asyncio.wait(slow, timeout=0.1)
    await asyncio.gather(*slow)
    assert len(answers) == 6
    for resp in answers:
        if resp is not None:
            assert_xroad_error(resp, 408, "Client.BadRequest", "request header block not complete within 1 s")


async def test_a_connection_over_the_limit_is_503_overloaded_in_xroad_error_form(world: World) -> None:
    # all at once, well within the header timeout that closes idle connections; one more than the limit
    opened = [await connect(world, "client") for _ in range(LIMITS["max_connections"] + 1)]
    try:
        reads = [asyncio.create_task(read_response(reader)) for reader, _ in opened]
        done, pending = await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED, timeout=10)
        assert done, "no connection was refused"
        refused = done.pop().result()
        assert_xroad_error(refused, 503, "Server.ClientProxy.Overloaded", "too many connections")
        for task in pending:
            task.cancel()
    finally:
        for _, writer in opened:
            writer.close()

    async def served() -> bool:
        resp, _ = await exchange_raw(world, "client", b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        return resp.status == 200

    await wait_for_condition(served, timeout=10, what="the client port serves again once connections closed")


# ------------------------------------------------------------------------------------------ one client's share


async def test_one_clients_exchanges_in_progress_are_bounded_429(world: World) -> None:
    def slow_seen() -> int:
        return sum(s.path_qs.startswith("/slow") for s in world.probe.seen)

    before = slow_seen()
    held = [asyncio.create_task(call(world.ss1, PROBE + "/slow" + f"/{i}", headers={"X-Road-Id": f"DEV-held-{i}"}))
            for i in range(2)]
    try:
        await wait_for_condition(lambda: slow_seen() == before + 2, timeout=20,
                                 what="both held exchanges reached the service")
        answer = await call(world.ss1, PROBE + "/third", headers={"X-Road-Id": "DEV-third"})
        answer.assert_error(429, "Client.TooManyRequests",
                            contains=f"client SUBSYSTEM:{CONSUMER} already has 2 exchanges in progress")
        assert not any(s.path_qs.startswith("/third") for s in world.probe.seen)
        # the share is counted once the client is authenticated: a request that fails authentication is refused
        # as such, whatever the share (so nobody can use up a client's share by naming it)
        await world.ss1.store.update_client(CONSUMER, is_auth="https")
        await world.ss1.reload_serverconf()
        try:
            answer = await call(world.ss1, PROBE + "/spoofed", headers={"X-Road-Id": "DEV-spoofed"})
        finally:
            await world.ss1.store.update_client(CONSUMER, is_auth="none")
            await world.ss1.reload_serverconf()
        answer.assert_error(500, "Server.ClientProxy.SslAuthenticationFailed", contains="must connect over HTTPS")
    finally:
        world.probe.release.set()
    assert [(await t).status for t in held] == [200, 200]
    answer = await call(world.ss1, PROBE + "/after", headers={"X-Road-Id": "DEV-after"})
    assert answer.status == 200  # the count went back down


# ------------------------------------------------------------------------------------------ the renderer itself


@pytest.mark.parametrize(("side", "status", "xroad_type"), [
    (CLIENT_PROXY, 400, "Client.BadRequest"), (CLIENT_PROXY, 408, "Client.BadRequest"),
    (CLIENT_PROXY, 413, "Client.BadRequest"), (CLIENT_PROXY, 414, "Client.BadRequest"),
    (CLIENT_PROXY, 431, "Client.BadRequest"), (CLIENT_PROXY, 503, "Server.ClientProxy.Overloaded"),
    (CLIENT_PROXY, 500, "Server.ClientProxy.InternalError"), (SERVER_PROXY, 503, "Server.ServerProxy.Overloaded"),
    (SERVER_PROXY, 500, "Server.ServerProxy.InternalError"), (SERVER_PROXY, 431, "Client.BadRequest"),
])
async def test_refusal_types_by_status(side: str, status: int, xroad_type: str) -> None:
    resp = refusal_renderer(side)(status, "what the layer says")  # type: ignore[arg-type]  # a Side from the table
    assert resp.status == status
    assert dict(resp.headers)["X-Road-Error"] == xroad_type
    assert json.loads(resp.body)["message"] == "what the layer says"


async def test_a_handler_that_raises_is_an_internal_error_in_xroad_form() -> None:
    async def broken(_request: Request) -> Response:
        raise RuntimeError("a bug")

    async with serving(broken) as server:
        server.render_refusal = refusal_renderer(CLIENT_PROXY)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /x HTTP/1.1\r\n\r\n")
        resp = await read_response(reader)
        writer.close()
    assert resp.status == 500
    assert resp.header("X-Road-Error") == "Server.ClientProxy.InternalError"
    assert json.loads(resp.body)["message"] == "internal server error"


# ------------------------------------------------------------------------------------------ the settings


@pytest.mark.parametrize(("key", "value", "message"), [
    ("header_timeout_seconds", 0.0, "[server] header_timeout_seconds must be a positive number of seconds"),
    ("keepalive_timeout_seconds", -1.0, "[server] keepalive_timeout_seconds must be a positive number of seconds"),
    ("max_connections", 0, "[server] max_connections must be at least 1"),
    ("max_header_bytes", 0, "[server] max_header_bytes must be at least 1"),
    ("max_uri_bytes", 0, "[server] max_uri_bytes must be at least 1"),
    ("max_client_exchanges", 0, "[server] max_client_exchanges = 0 must be at least 1"),
])
async def test_a_bad_port_setting_stops_the_server_before_any_socket_opens(
    tmp_path: Path, key: str, value: float, message: str,
) -> None:
    settings = Settings()
    settings = replace(settings, server=replace(settings.server, state_dir=str(tmp_path), **{key: value}))
    with pytest.raises(ConfigError) as caught:
        SecurityServer(settings)
    assert caught.value.message == message


# ------------------------------------------------------------------------------------------ large bodies


@pytest.mark.parametrize("size", [0, 1, OFF_LOOP_HASH_BYTES - 1, OFF_LOOP_HASH_BYTES, 3 * OFF_LOOP_HASH_BYTES])
async def test_body_hashes_are_the_same_on_and_off_the_event_loop(size: int) -> None:
    body = os.urandom(size)
    expected = hashlib.sha256(body).digest(), (hashlib.sha512(body).digest() if body else None)
    assert await body_hashes(body) == expected
    assert await body_sha256(body) == expected[0]


async def test_a_body_hashed_off_the_event_loop_passes_both_servers_byte_for_byte(world: World) -> None:
    body = b"".join(b"%08d," % i for i in range(OFF_LOOP_HASH_BYTES // 9 * 2))  # about 2 * the threshold
    message_id = f"DEV-large-{uuid.uuid4()}"
    answer = await call(world.ss1, PROBE + "/large", method="POST", data=body, headers={"X-Road-Id": message_id})
    assert answer.status == 200, answer.body[:300]
    assert answer.json["body"].encode() == body  # the probe echoes it: the response is as large, and verified
    seen = [s for s in world.probe.seen if s.headers.get("X-Road-Id") == message_id]
    assert [s.body for s in seen] == [body]
    for server in (world.ss1, world.ss2):
        kinds = [(r.kind, r.status) for r in await records(server, message_id=message_id)]
        assert kinds == [("request", None), ("response", 200)]
