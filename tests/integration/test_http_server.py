"""The lean HTTP/1.1 server (gateway.proxy.http.server) on real loopback sockets, plain and over mutual TLS.

A raw peer writes bytes and reads what comes back, so that every framing rule and every refusal is seen as
it goes on the wire: raw names and order, Content-Length and chunked bodies, keep-alive, HTTP/1.0,
100-continue, pipelining, each limit's status, timeouts, back-pressure, the peer certificate, graceful close.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from http_kit import Pki, Raw, make_http_pki, read_response, serving

from gateway.errors import GatewayError, PayloadTooLarge, RequestError
from gateway.proxy.http import Request, Response, ServerLimits

pytestmark = pytest.mark.integration

Handler = Callable[[Request], Awaitable[Response]]


async def echo(request: Request) -> Response:
    """Answers with what it saw: method, target and header pairs as received, then the body."""
    try:
        body = await request.body()
    except GatewayError as e:
        return Response(status=e.http_status, headers=[("Content-Type", "text/plain")], body=e.message.encode())
    seen = [f"{request.method} {request.raw_path} {request.http_version}"]
    seen += [f"{n.decode()}={v.decode()}" for n, v in request.raw_headers]
    return Response(status=200, headers=[("X-Seen", str(len(request.raw_headers))), ("Content-Type", "text/plain")],
                    body="\n".join(seen).encode() + b"\n\n" + body)


async def connect(port: int, ctx: ssl.SSLContext | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, ssl=ctx)


async def exchange(
    port: int, data: bytes, ctx: ssl.SSLContext | None = None, *, head: bool = False,
) -> tuple[Raw, bytes]:
    reader, writer = await connect(port, ctx)
    writer.write(data)
    resp = await read_response(reader, head=head)
    rest = await reader.read()  # the server closes (every request below asks it to, or is refused)
    writer.close()
    return resp, rest


async def test_raw_method_target_and_header_pairs_in_order_with_names_as_sent() -> None:
    async with serving(echo) as server:
        resp, _ = await exchange(server.port, b"PATCH /r1/A/B/C?x=%2F&y HTTP/1.1\r\nHost: h\r\nX-road-CLIENT: a\r\n"
                                 b"x-dup: 1\r\nX-Dup: 2\r\nConnection: close\r\n\r\n")
    assert resp.status == 200 and resp.reason == "OK"
    lines = resp.body.decode().split("\n")
    assert lines[:6] == ["PATCH /r1/A/B/C?x=%2F&y 1.1", "Host=h", "X-road-CLIENT=a", "x-dup=1", "X-Dup=2",
                         "Connection=close"]
    # handler headers first, in order; then the layer's framing
    assert [n for n, _ in resp.headers] == ["X-Seen", "Content-Type", "Content-Length", "Date", "Connection"]
    assert resp.header("Connection") == "close"
    assert int(resp.header("Content-Length") or -1) == len(resp.body)


async def test_content_length_and_chunked_bodies_reach_the_handler_whole() -> None:
    async with serving(echo) as server:
        resp, _ = await exchange(server.port, b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
                                 b"hello")
        assert resp.body.endswith(b"\n\nhello")
        resp, _ = await exchange(server.port, b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                                 b"Connection: close\r\n\r\n3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\nTrailer: x\r\n\r\n")
        assert resp.body.endswith(b"\n\nhello")
        assert b"Trailer" not in resp.body  # trailers are not headers


async def test_keep_alive_serves_several_requests_then_connection_close_ends_it() -> None:
    async with serving(echo) as server:
        reader, writer = await connect(server.port)
        for i in range(3):
            writer.write(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i)
            resp = await read_response(reader)
            assert resp.status == 200 and resp.header("Connection") is None
            assert resp.body.startswith(b"GET /%d 1.1" % i)
        writer.write(b"GET /last HTTP/1.1\r\nConnection: close\r\n\r\n")
        resp = await read_response(reader)
        assert resp.header("Connection") == "close"
        assert await reader.read() == b""  # closed by the server
        writer.close()


async def test_http_1_0_closes_unless_keep_alive_is_asked() -> None:
    async with serving(echo) as server:
        resp, rest = await exchange(server.port, b"GET /old HTTP/1.0\r\n\r\n")
        assert resp.status == 200 and resp.header("Connection") == "close" and rest == b""
        reader, writer = await connect(server.port)
        writer.write(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        resp = await read_response(reader)
        assert resp.header("Connection") == "keep-alive"
        writer.write(b"GET /b HTTP/1.0\r\n\r\n")
        resp = await read_response(reader)
        assert resp.body.startswith(b"GET /b 1.0") and resp.header("Connection") == "close"
        writer.close()


async def test_expect_100_continue_is_answered_when_the_handler_asks_for_the_body() -> None:
    async with serving(echo) as server:
        reader, writer = await connect(server.port)
        writer.write(b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        interim = await read_response(reader)
        assert interim.status == 100
        writer.write(b"data")
        resp = await read_response(reader)
        assert resp.status == 200 and resp.body.endswith(b"\n\ndata")
        writer.close()


async def test_expect_100_continue_over_the_limit_gets_413_and_no_continue() -> None:
    async with serving(echo, limits=ServerLimits(max_body_bytes=10)) as server:
        resp, rest = await exchange(server.port, b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\n"
                                    b"Content-Length: 11\r\n\r\n")
    assert resp.status == 413
    assert resp.body == b"request body of 11 bytes is larger than the maximum of 10 bytes"
    assert resp.header("Connection") == "close" and rest == b""


async def test_pipelined_requests_are_handled_one_at_a_time_and_answered_in_order() -> None:
    release, entered = asyncio.Event(), asyncio.Event()
    started: list[str] = []

    async def slow_first(request: Request) -> Response:
        started.append(request.raw_path)
        if request.raw_path == "/1":
            entered.set()
            await release.wait()
        return Response(status=200, body=request.raw_path.encode())

    async with serving(slow_first) as server:
        reader, writer = await connect(server.port)
        writer.write(b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nabGET /3 HTTP/1.1\r\n\r\n")
        await entered.wait()
        assert started == ["/1"]  # the others wait, parsed and queued
        release.set()
        bodies = [(await read_response(reader)).body for _ in range(3)]
        assert bodies == [b"/1", b"/2", b"/3"] and started == ["/1", "/2", "/3"]
        writer.close()


async def test_garbage_pipelined_behind_a_request_is_refused_after_its_answer() -> None:
    async with serving(echo) as server:
        reader, writer = await connect(server.port)
        writer.write(b"GET /1 HTTP/1.1\r\n\r\nGARBAGE\r\n\r\n")
        first = await read_response(reader)
        refused = await read_response(reader)
        assert await reader.read() == b""
        writer.close()
    assert first.status == 200 and first.header("Connection") is None
    assert refused.status == 400 and refused.header("Connection") == "close"


@pytest.mark.parametrize(("data", "status", "text"), [
    (b"GARBAGE\r\n\r\n", 400, "malformed request"),
    (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400, "malformed request"),
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "malformed request"),
    (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n", 414, "request target longer than 64 bytes"),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(9)) + b"\r\n", 431,
     "more than 8 request header lines"),
    (b"GET / HTTP/1.1\r\nBig: " + b"v" * 300 + b"\r\n\r\n", 431, "request header block larger than 256 bytes"),
])
async def test_bad_requests_get_a_precise_status_a_small_body_and_connection_close(
    data: bytes, status: int, text: str,
) -> None:
    limits = ServerLimits(max_target_bytes=64, max_headers=8, max_header_bytes=256)
    async with serving(echo, limits=limits) as server:
        resp, rest = await exchange(server.port, data)
    assert resp.status == status
    assert resp.header("Connection") == "close" and rest == b""
    assert resp.body.decode().startswith(text) and len(resp.body) < 200


async def test_an_endless_header_line_is_refused_before_it_fills_memory() -> None:
    limits = ServerLimits(max_target_bytes=64, max_header_bytes=256)
    async with serving(echo, limits=limits) as server:
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.1\r\nHuge: ")
        answer = asyncio.create_task(read_response(reader))
        for _ in range(100):  # up to 100 x 8 KiB, never ending the line, until the server answers
            if answer.done():
                break
            writer.write(b"v" * 8192)
            try:
                await writer.drain()
            except ConnectionError:
                break
        refused = await answer
        writer.close()
    assert refused.status == 431


async def test_bad_chunked_encoding_fails_the_body_and_ends_the_connection() -> None:
    async with serving(echo) as server:
        resp, rest = await exchange(server.port, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"zz\r\nhello\r\n0\r\n\r\n")
    assert resp.status == 400 and resp.body.startswith(b"malformed request body: ")
    assert resp.header("Connection") == "close" and rest == b""


@pytest.mark.parametrize("data", [
    b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n01234567890",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n5\r\n67890\r\n0\r\n\r\n",
])
async def test_a_body_over_the_limit_is_413_and_the_connection_ends(data: bytes) -> None:
    async with serving(echo, limits=ServerLimits(max_body_bytes=10)) as server:
        resp, rest = await exchange(server.port, data)
    assert resp.status == 413 and resp.body.endswith(b"larger than the maximum of 10 bytes")
    assert resp.header("Connection") == "close" and rest == b""


async def test_the_body_is_held_on_the_given_account_and_its_refusal_fails_the_read() -> None:
    class Hold:
        def __init__(self, limit: int) -> None:
            self.limit, self.held = limit, 0

        def take(self, size: int, what: str) -> None:
            if self.held + size > self.limit:
                raise RequestError(f"{what}: budget full")
            self.held += size

    holds: list[Hold] = []

    async def held(request: Request) -> Response:
        hold = Hold(6)
        holds.append(hold)
        try:
            body = await request.body(hold=hold)
        except RequestError as e:
            return Response(status=503, body=e.message.encode())
        return Response(status=200, body=body)

    async with serving(held) as server:
        ok, _ = await exchange(server.port, b"POST / HTTP/1.1\r\nContent-Length: 6\r\nConnection: close\r\n\r\nabcdef")
        full, _ = await exchange(server.port, b"POST / HTTP/1.1\r\nContent-Length: 7\r\nConnection: close\r\n\r\n"
                                 b"abcdefg")
        chunked, _ = await exchange(server.port, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                                    b"Connection: close\r\n\r\n4\r\nabcd\r\n4\r\nefgh\r\n0\r\n\r\n")
    assert (ok.status, ok.body, holds[0].held) == (200, b"abcdef", 6)
    assert (full.status, full.body) == (503, b"request body: budget full")
    assert chunked.status == 503 and holds[2].held <= 6


async def test_a_slow_client_gets_408_after_the_header_timeout() -> None:
    async with serving(echo, limits=ServerLimits(header_timeout=0.2)) as server:
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n")  # never ends the header block
        resp = await asyncio.wait_for(read_response(reader), 10)
        assert resp.status == 408 and resp.header("Connection") == "close"
        assert await reader.read() == b""
        writer.close()
        # a connection that sends nothing at all is closed without an answer
        reader, writer = await connect(server.port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()


async def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout() -> None:
    async with serving(echo, limits=ServerLimits(keepalive_timeout=0.2)) as server:
        reader, writer = await connect(server.port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        assert (await read_response(reader)).status == 200
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()


async def test_a_body_that_stops_arriving_fails_after_the_body_timeout() -> None:
    async with serving(echo, limits=ServerLimits(body_timeout=0.2)) as server:
        resp, rest = await exchange(server.port, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234")
    assert rest == b""
    assert resp.status == 400 and resp.body == b"no byte of the request body arrived for 0.2 s"
    assert resp.header("Connection") == "close"


async def test_a_client_that_disconnects_mid_body_fails_the_body_read() -> None:
    failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def reader_handler(request: Request) -> Response:
        try:
            await request.body()
        except RequestError as e:
            failed.set_result(e)
        return Response(status=200)

    async with serving(reader_handler) as server:
        _reader, writer = await connect(server.port)
        writer.write(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()
        writer.close()
        error = await asyncio.wait_for(failed, 10)
    assert str(error) == "the client closed the connection before sending the whole request body"


async def test_a_failing_handler_gets_500_without_detail() -> None:
    async def broken(_request: Request) -> Response:
        raise RuntimeError("secret detail")

    async def bad_header(_request: Request) -> Response:
        return Response(status=200, headers=[("X-Split", "a\r\nSet-Cookie: evil=1")])

    for handler in (broken, bad_header):
        async with serving(handler) as server:
            reader, writer = await connect(server.port)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            resp = await read_response(reader)
            assert resp.status == 500 and resp.body == b"internal server error\n"
            assert resp.header("Set-Cookie") is None
            writer.write(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")  # the connection goes on
            assert (await read_response(reader)).status == 500
            writer.close()


async def test_framing_is_the_layers_head_has_no_body_and_204_no_length() -> None:
    async def answer(request: Request) -> Response:
        status = 204 if request.raw_path == "/empty" else 200
        return Response(status=status, reason="Fine", body=b"" if status == 204 else b"12345",
                        headers=[("Content-Length", "999"), ("Transfer-Encoding", "chunked"), ("X-A", "1")])

    async with serving(answer) as server:
        reader, writer = await connect(server.port)
        writer.write(b"HEAD / HTTP/1.1\r\n\r\n")
        resp = await read_response(reader, head=True)
        assert (resp.status, resp.reason, resp.header("Content-Length")) == (200, "Fine", "5")
        assert resp.header("Transfer-Encoding") is None
        writer.write(b"GET /empty HTTP/1.1\r\n\r\n")
        resp = await read_response(reader)
        assert resp.status == 204 and resp.header("Content-Length") is None
        writer.write(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        resp = await read_response(reader)  # nothing of a HEAD body came before it
        assert resp.body == b"12345" and [v for n, v in resp.headers if n == "Content-Length"] == ["5"]
        writer.close()


async def test_one_connection_over_the_cap_is_answered_503_and_closed() -> None:
    async with serving(echo, limits=ServerLimits(max_connections=1)) as server:
        first_reader, first = await connect(server.port)
        first.write(b"GET / HTTP/1.1\r\n\r\n")
        assert (await read_response(first_reader)).status == 200  # the first is open and registered
        reader, writer = await connect(server.port)
        resp = await read_response(reader)
        assert resp.status == 503 and resp.body == b"too many connections\n"
        assert await reader.read() == b""
        writer.close()
        first.close()


async def test_reading_pauses_while_a_response_waits_under_back_pressure() -> None:
    big = b"x" * (32 * 2**20)
    started: list[str] = []
    first_answered = asyncio.Event()

    async def answer(request: Request) -> Response:
        started.append(request.raw_path)
        if request.raw_path == "/big":
            asyncio.get_running_loop().call_soon(first_answered.set)  # runs after the response is written
            return Response(status=200, body=big)
        return Response(status=200, body=b"small")

    limits = ServerLimits(write_buffer_high=64 * 1024)
    async with serving(answer, limits=limits) as server:
        reader, writer = await connect(server.port)
        writer.write(b"GET /big HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n")
        await first_answered.wait()
        conn = next(iter(server.connections))
        assert conn._write_paused and started == ["/big"]  # 32 MiB cannot all be in the kernel's buffers
        first = await read_response(reader)
        second = await read_response(reader)
        assert len(first.body) == len(big) and second.body == b"small" and started == ["/big", "/next"]
        writer.close()


async def test_mutual_tls_gives_the_handler_the_peer_certificate(tmp_path: Path) -> None:
    pki: Pki = make_http_pki(tmp_path)
    seen: list[tuple[bool, bytes | None]] = []

    async def record(request: Request) -> Response:
        seen.append((request.tls, request.peer_cert))
        return Response(status=200, body=b"ok")

    async with serving(record, ssl_context=pki.server_context()) as server:
        ctx = pki.client_context()
        reader, writer = await connect(server.port, ctx)
        for _ in range(2):
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            assert (await read_response(reader)).body == b"ok"
        writer.close()
        # a client certificate from another CA is refused in the handshake
        stranger = None
        with pytest.raises((ssl.SSLError, ConnectionError, EOFError)):  # TLS 1.3: refused after the handshake
            reader, stranger = await connect(server.port, pki.client_context(cert=pki.stranger))
            stranger.write(b"GET / HTTP/1.1\r\n\r\n")
            await read_response(reader)
        if stranger is not None:
            stranger.close()
    assert seen == [(True, pki.der(pki.client))] * 2


async def test_graceful_close_finishes_the_request_in_progress_and_ends_idle_connections() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow(_request: Request) -> Response:
        entered.set()
        await release.wait()
        return Response(status=200, body=b"done")

    server_cm = serving(slow)
    server = await server_cm.__aenter__()
    busy_reader, busy = await connect(server.port)
    busy.write(b"GET / HTTP/1.1\r\n\r\n")
    idle_reader, idle = await connect(server.port)
    await entered.wait()
    closing = asyncio.create_task(server.close(timeout=10))
    assert await idle_reader.read() == b""  # the idle one is ended at once
    release.set()
    resp = await read_response(busy_reader)
    assert resp.body == b"done" and resp.header("Connection") == "close"
    await closing
    busy.close()
    idle.close()
    await server_cm.__aexit__(None, None, None)


async def test_a_request_target_is_not_decoded_and_the_handler_sees_payload_too_large_as_ours() -> None:
    # the error classes the body read raises are the gateway's own, so a proxy's error handling renders them
    assert issubclass(PayloadTooLarge, RequestError) and PayloadTooLarge.status == 413
    async with serving(echo) as server:
        resp, _ = await exchange(server.port, b"GET /r1/%2e%2e/%zz?q=%C3%A4 HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert resp.body.startswith(b"GET /r1/%2e%2e/%zz?q=%C3%A4 1.1")


@pytest.mark.parametrize(("field", "value"), [
    ("max_body_bytes", 0), ("max_headers", 0), ("max_connections", 0), ("header_timeout", 0),
    ("keepalive_timeout", -1.0),
])
def test_limits_refuse_nonsense(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        ServerLimits(**{field: value})  # type: ignore[arg-type]  # one field by name, of either number type
