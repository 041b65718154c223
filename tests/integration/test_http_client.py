"""The lean HTTP/1.1 client pool (gateway.proxy.http.client) against real loopback peers, plain and mutual TLS.

The peer is either the layer's own server (mutual TLS with real certificates) or a raw asyncio server that
writes canned bytes, so that each response framing, each bad answer and each way a connection ends is
produced exactly: reuse, the peer check before any byte, stale connections and the retry rule, limits,
timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from http_kit import Pki, canned, make_http_pki, raw_peer, serving

from gateway.errors import SslAuthenticationFailed
from gateway.proxy.http import (
    ClientLimits,
    ClientPool,
    ConnectFailed,
    ConnectionLost,
    MalformedResponse,
    Request,
    Response,
    ResponseTimeout,
    ResponseTooLarge,
)

pytestmark = pytest.mark.integration

async def until(condition: Callable[[], bool]) -> None:
    """Turn the event loop until ``condition`` holds (a state change, not a duration)."""
    while not condition():
        await asyncio.sleep(0)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-B: 1\r\nx-a: 2\r\n\r\nok"


async def test_mutual_tls_checks_the_peer_before_any_request_byte_and_reuses_the_connection(tmp_path: Path) -> None:
    pki: Pki = make_http_pki(tmp_path)
    events: list[str] = []

    async def handler(request: Request) -> Response:
        events.append(f"request {request.method} {request.raw_path}")
        body = await request.body()
        return Response(status=201, reason="Made", headers=[("X-Echo", request.header("x-in") or "")], body=body)

    async def check(der: bytes | None) -> None:
        assert der == pki.der(pki.server)
        events.append("check")

    async with serving(handler, ssl_context=pki.server_context()) as server:
        pool = ClientPool(("127.0.0.1", server.port), ssl=pki.client_context(), check_peer=check)
        for i in range(3):
            resp = await pool.request("POST", f"/r1/x?i={i}", [("X-In", "v")], b"body %d" % i)
            assert (resp.status, resp.reason, resp.body) == (201, "Made", b"body %d" % i)
            assert resp.header("x-echo") == "v" and resp.http_version == "1.1"
        assert pool.open_connections == 1 and len(server.connections) == 1
        await pool.close()
    # checked on the new connection and again each time the pooled one is taken, always before the request
    assert events == ["check", "request POST /r1/x?i=0", "check", "request POST /r1/x?i=1",
                      "check", "request POST /r1/x?i=2"]


async def test_a_peer_refused_by_the_check_gets_no_request_byte_and_the_connection_is_closed(tmp_path: Path) -> None:
    pki: Pki = make_http_pki(tmp_path)
    seen: list[str] = []
    refuse = False

    async def handler(request: Request) -> Response:
        seen.append(request.raw_path)
        return Response(status=200)

    async def check(_der: bytes | None) -> None:
        if refuse:
            raise SslAuthenticationFailed("not registered")

    async with serving(handler, ssl_context=pki.server_context()) as server:
        pool = ClientPool(("127.0.0.1", server.port), ssl=pki.client_context(), check_peer=check)
        await pool.request("GET", "/first")
        refuse = True
        with pytest.raises(SslAuthenticationFailed, match="not registered"):
            await pool.request("GET", "/second")  # the pooled connection, checked again
        assert pool.open_connections == 0
        with pytest.raises(SslAuthenticationFailed):
            await pool.request("GET", "/third")  # a new connection
        assert pool.open_connections == 0
        await pool.close()
    assert seen == ["/first"]


async def test_a_certificate_the_handshake_refuses_is_a_connect_failure_naming_why(tmp_path: Path) -> None:
    pki: Pki = make_http_pki(tmp_path)
    other: Pki = make_http_pki(tmp_path / "other")  # the server's certificate is from a CA we do not trust

    async def handler(_request: Request) -> Response:
        return Response(status=200)

    async with serving(handler, ssl_context=other.server_context()) as server:
        pool = ClientPool(("127.0.0.1", server.port), ssl=pki.client_context())
        with pytest.raises(ConnectFailed) as info:
            await pool.request("GET", "/")
        assert info.value.sent is False
        assert info.value.certificate_error  # OpenSSL's reason, e.g. "self-signed certificate in certificate chain"
        assert str(info.value).endswith(f"refused: {info.value.certificate_error}")
        await pool.close()


async def test_connect_failures_say_nothing_was_sent(free_port: int, tmp_path: Path) -> None:
    pool = ClientPool(("127.0.0.1", free_port))  # nobody listens there
    with pytest.raises(ConnectFailed, match=r"cannot connect to 127\.0\.0\.1:") as info:
        await pool.request("GET", "/")
    assert info.value.sent is False and pool.open_connections == 0

    # a TCP peer that never answers the TLS handshake: the connect timeout covers the handshake
    writers: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # never answers; closed below

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pki = make_http_pki(tmp_path)
    pool = ClientPool(("127.0.0.1", port), ssl=pki.client_context(), limits=ClientLimits(connect_timeout=0.3))
    with pytest.raises(ConnectFailed, match=r"no connection to 127.0.0.1:\d+ within 0.3 s"):
        await pool.request("GET", "/")
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(("response", "body"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n", b"hello"),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
])
async def test_response_framings_are_read_whole_and_the_connection_reused(response: bytes, body: bytes) -> None:
    async with raw_peer(canned(response)) as peer:
        pool = ClientPool(("127.0.0.1", peer.port))
        for _ in range(2):
            resp = await pool.request("GET", "/")
            assert resp.body == body
        assert peer.connections == 1
        await pool.close()


async def test_raw_header_pairs_come_back_in_order_with_names_as_sent() -> None:
    async with raw_peer(canned(OK)) as peer:
        pool = ClientPool(("127.0.0.1", peer.port))
        resp = await pool.request("GET", "/a?b=%2F", [("X-Road-Client", "A/B"), ("Content-Length", "99"),
                                                      ("Connection", "close")])
        await pool.close()
    assert resp.raw_headers == [(b"Content-Length", b"2"), (b"X-B", b"1"), (b"x-a", b"2")]
    # the pool frames the request itself: the caller's framing headers are dropped, Host added
    host = f"127.0.0.1:{peer.port}".encode()
    assert peer.requests == [b"GET /a?b=%2F HTTP/1.1\r\nX-Road-Client: A/B\r\nHost: " + host + b"\r\n\r\n"]


async def test_a_response_to_the_end_of_the_connection_is_read_and_not_reused() -> None:
    async with raw_peer(canned(b"HTTP/1.1 200 OK\r\n\r\nall of it", keep=False)) as peer:
        pool = ClientPool(("127.0.0.1", peer.port))
        assert (await pool.request("GET", "/")).body == b"all of it"
        assert (await pool.request("GET", "/")).body == b"all of it"
        assert peer.connections == 2
        await pool.close()


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
])
async def test_a_connection_the_peer_will_not_keep_is_not_reused(response: bytes) -> None:
    async with raw_peer(canned(response, keep=True)) as peer:
        pool = ClientPool(("127.0.0.1", peer.port))
        await pool.request("GET", "/")
        assert pool.open_connections == 0
        await pool.request("GET", "/")
        assert peer.connections == 2
        await pool.close()


async def test_head_responses_have_no_body_whatever_their_length_says() -> None:
    async with raw_peer(canned(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")) as peer:
        pool = ClientPool(("127.0.0.1", peer.port))
        for _ in range(2):
            resp = await pool.request("HEAD", "/")
            assert resp.status == 200 and resp.body == b"" and resp.header("content-length") == "1000"
        assert peer.connections == 1
        await pool.close()


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nhello world",
])
async def test_a_body_over_the_limit_is_refused_and_the_connection_closed(response: bytes) -> None:
    async with raw_peer(canned(response, keep=False)) as peer:
        pool = ClientPool(("127.0.0.1", peer.port), limits=ClientLimits(max_body_bytes=10))
        with pytest.raises(ResponseTooLarge, match=r"the provider's response.* is larger than the maximum of 10 bytes"):
            await pool.request("GET", "/", what="the provider's response")
        assert pool.open_connections == 0
        await pool.close()


async def test_what_the_body_holds_is_taken_from_the_hold_and_its_refusal_ends_the_read() -> None:
    class Full(Exception):
        pass

    class Hold:
        def __init__(self, limit: int) -> None:
            self.limit, self.held = limit, 0

        def take(self, size: int, what: str) -> None:
            if self.held + size > self.limit:
                raise Full(what)
            self.held += size

    async with raw_peer(canned(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")) as peer:
        pool = ClientPool(("127.0.0.1", peer.port))
        hold = Hold(5)
        await pool.request("GET", "/", hold=hold)
        assert hold.held == 5
        with pytest.raises(Full, match="the service's response"):
            await pool.request("GET", "/", hold=Hold(4), what="the service's response")
        assert pool.open_connections == 0
        await pool.close()


@pytest.mark.parametrize(("response", "match"), [
    (b"NOT HTTP AT ALL\r\n\r\n", "malformed response"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed response"),
    (b"HTTP/1.1 200 OK\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(5)) + b"\r\n", "more than 4 response header"),
    (b"HTTP/1.1 200 OK\r\nBig: " + b"v" * 200 + b"\r\n\r\n", "response header block larger than 100 bytes"),
])
async def test_a_malformed_response_is_refused_precisely(response: bytes, match: str) -> None:
    async with raw_peer(canned(response)) as peer:
        pool = ClientPool(("127.0.0.1", peer.port), limits=ClientLimits(max_headers=4, max_header_bytes=100))
        with pytest.raises(MalformedResponse, match=match):
            await pool.request("GET", "/")
        assert pool.open_connections == 0
        await pool.close()


async def test_a_response_not_whole_within_the_read_timeout_fails_and_closes() -> None:
    release = asyncio.Event()

    async def slow(_request: Request) -> Response:
        await release.wait()
        return Response(status=200)

    async with serving(slow) as server:
        pool = ClientPool(("127.0.0.1", server.port), limits=ClientLimits(read_timeout=0.2))
        with pytest.raises(ResponseTimeout, match=r"no whole response within 0\.2 s"):
            await pool.request("GET", "/")
        with pytest.raises(TimeoutError):  # the proxies' existing "did not answer in time" branch catches it
            await pool.request("GET", "/", read_timeout=0.1)
        assert pool.open_connections == 0
        release.set()
        await pool.close()


Answer = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


def _stale_after_first() -> tuple[list[int], Answer]:
    """A peer that answers the first request on each connection, then closes the connection on the next one
    without a byte of answer (as a peer whose idle timer fired just as the request went out)."""
    answered: list[int] = []

    async def answer(head: bytes, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if answered and answered[-1] == id(writer):
            return False  # second request on this connection: close, answer nothing
        answered.append(id(writer))
        writer.write(OK)
        await writer.drain()
        return True

    return answered, answer


@pytest.mark.parametrize(("method", "retry_stale", "retried"), [
    ("GET", None, True), ("PUT", None, True), ("POST", None, False), ("POST", True, True), ("GET", False, False),
])
async def test_a_stale_pooled_connection_is_retried_once_only_when_the_request_may_be_repeated(
    method: str, retry_stale: bool | None, retried: bool,
) -> None:
    _answered, answer = _stale_after_first()
    async with raw_peer(answer) as peer:
        pool = ClientPool(("127.0.0.1", peer.port))
        await pool.request(method, "/one", retry_stale=retry_stale)
        if retried:
            assert (await pool.request(method, "/two", retry_stale=retry_stale)).body == b"ok"
            assert peer.connections == 2
        else:
            with pytest.raises(ConnectionLost, match="the connection ended before the whole response arrived"):
                await pool.request(method, "/two", retry_stale=retry_stale)
            assert peer.connections == 1
        await pool.close()


async def test_a_fresh_connection_that_ends_without_an_answer_is_not_retried() -> None:
    async def hang_up(_head: bytes, _reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> bool:
        return False

    async with raw_peer(hang_up) as peer:
        pool = ClientPool(("127.0.0.1", peer.port))
        with pytest.raises(ConnectionLost):
            await pool.request("GET", "/")
        assert peer.connections == 1
        await pool.close()


async def test_a_pooled_connection_closed_by_the_peer_while_idle_is_never_used() -> None:
    async def once_then_close(_head: bytes, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK)  # says keep-alive, then closes anyway
        await writer.drain()
        return False

    async with raw_peer(once_then_close) as peer:
        pool = ClientPool(("127.0.0.1", peer.port))
        await pool.request("POST", "/", body=b"x")
        await peer.closed.wait()
        await asyncio.wait_for(until(lambda: pool.open_connections == 0), 10)  # the pool has seen the FIN
        assert (await pool.request("POST", "/", body=b"y")).body == b"ok"  # not a retry: a new connection
        assert peer.connections == 2
        await pool.close()


async def test_requests_over_the_connection_cap_wait_for_a_connection() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: Request) -> Response:
        if request.raw_path == "/slow":
            entered.set()
            await release.wait()
        return Response(status=200, body=request.raw_path.encode())

    async with serving(slow) as server:
        pool = ClientPool(("127.0.0.1", server.port), limits=ClientLimits(max_connections=1))
        first = asyncio.create_task(pool.request("GET", "/slow"))
        await entered.wait()
        second = asyncio.create_task(pool.request("GET", "/fast"))
        assert not second.done() and pool.open_connections == 1
        release.set()
        assert [(await first).body, (await second).body] == [b"/slow", b"/fast"]
        assert pool.open_connections == 1
        await pool.close()


async def test_an_idle_connection_is_closed_after_the_idle_timeout() -> None:
    async with raw_peer(canned(OK)) as peer:
        pool = ClientPool(("127.0.0.1", peer.port), limits=ClientLimits(idle_timeout=0.1))
        await pool.request("GET", "/")
        await asyncio.wait_for(peer.closed.wait(), 10)  # the peer sees the pool close it
        assert pool.open_connections == 0
        await pool.close()


async def test_bad_input_is_refused_before_anything_is_sent() -> None:
    async with raw_peer(canned(OK)) as peer:
        pool = ClientPool(("127.0.0.1", peer.port))
        with pytest.raises(ValueError, match="holds CR or LF"):
            await pool.request("GET", "/", [("X-A", "1\r\nX-Injected: 2")])
        with pytest.raises(ValueError, match="holds CR or LF"):
            await pool.request("GET", "/ HTTP/1.1\r\nX: y")
        assert peer.connections == 0
        await pool.close()
        with pytest.raises(ConnectFailed, match="is closed"):
            await pool.request("GET", "/")


@pytest.mark.parametrize(("field", "value"), [
    ("max_body_bytes", 0), ("max_connections", 0), ("connect_timeout", 0), ("idle_timeout", -1.0),
    ("read_timeout", 0),
])
def test_limits_refuse_nonsense(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        ClientLimits(**{field: value})  # type: ignore[arg-type]  # one field by name, of either number type
