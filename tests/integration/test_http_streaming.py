"""Streamed bodies through the lean HTTP layer (gateway.proxy.http) on real loopback sockets, plain and over
mutual TLS: a request body handed over chunk by chunk with back-pressure and its limit, a response written from
a stream (Content-Length or chunked) and aborted when the stream fails, the client pool sending from a spool and
reading into one, and a body of a few hundred MiB through server and client with the process's resident memory
growing by a bounded amount.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bodies_kit import RSS_BOUND, body_of, reset_peak, status_kib
from http_kit import Pki, make_http_pki, raw_peer, read_response, serving
from waiting import wait_for_condition

from gateway.errors import GatewayError, PayloadTooLarge
from gateway.proxy.http import (
    ClientLimits,
    ClientPool,
    ConnectionLost,
    Request,
    Response,
    ResponseTimeout,
    ServerLimits,
)
from gateway.proxy.spool import Spool, spool_directory

pytestmark = pytest.mark.integration


async def spool_of(data: bytes, directory: Path | None = None) -> Spool:
    spool = Spool(directory=directory, memory_limit=64 * 1024 if directory else 1 << 30)
    for i in range(0, len(data), 100_000):
        await spool.write(data[i:i + 100_000])
    await spool.finish()
    return spool


def spooling_echo(directory: Path, *, known_length: bool = True):  # type: ignore[no-untyped-def]
    """A handler that streams the request body into a spool, then answers with it, streamed."""

    async def handler(request: Request) -> Response:
        spool = Spool(directory=directory, memory_limit=64 * 1024, sha512=True)
        try:
            await spool.write_from(request.stream())
        except GatewayError as e:
            spool.close()
            return Response(status=e.http_status, body=e.message.encode())
        except BaseException:
            spool.close()
            raise
        headers = [("X-Sha256", spool.sha256.hex()), ("X-Size", str(spool.size))]
        return Response(status=200, headers=headers, stream=spool.chunks_then_close(),
                        length=spool.size if known_length else None)

    return handler


async def raw_exchange(port: int, data: bytes) -> tuple[bytes, bytes]:
    """Write ``data``, read to the end; the head and what follows it, undecoded."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    raw = await reader.read()
    writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    return head, rest


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            assert data == b"\r\n"
            return bytes(out)
        out += data[:size]
        assert data[size:size + 2] == b"\r\n"
        data = data[size + 2:]


@pytest.mark.parametrize("known_length", [True, False])
async def test_a_streamed_request_body_and_a_streamed_response(tmp_path: Path, known_length: bool) -> None:
    body = body_of(700_000)
    async with serving(spooling_echo(spool_directory(tmp_path / "s"), known_length=known_length)) as server:
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 50_000]), body[i:i + 50_000])
                           for i in range(0, len(body), 50_000))
        for request in (b"POST /a HTTP/1.1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body),
                        b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                        + chunked + b"0\r\n\r\n"):
            head, rest = await raw_exchange(server.port, request)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"X-Sha256: " + hashlib.sha256(body).hexdigest().encode() in head
            if known_length:
                assert b"Content-Length: %d\r\n" % len(body) in head + b"\r\n" and rest == body
            else:
                assert b"Transfer-Encoding: chunked" in head and dechunk(rest) == body
    assert os.listdir(tmp_path / "s") == []


async def test_keep_alive_goes_on_after_a_streamed_response() -> None:
    async def handler(request: Request) -> Response:
        async def gen() -> AsyncIterator[bytes]:
            yield b"ab"
            yield b""
            yield b"c"
        return Response(status=200, stream=gen())

    async with serving(handler) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for _ in range(2):
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"Transfer-Encoding: chunked" in head and b"Connection" not in head
            assert await reader.readuntil(b"0\r\n\r\n") == b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"
        writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")  # HTTP/1.0: delimited by the close
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Connection: close" in head and await reader.read() == b"abc"
        writer.close()


async def test_reading_pauses_while_the_stream_consumer_is_behind() -> None:
    limits = ServerLimits(stream_buffer_bytes=64 * 1024, max_body_bytes=64 * 2**20)
    got_first, release = asyncio.Event(), asyncio.Event()
    seen = hashlib.sha256()
    most_buffered = 0

    async def slow(request: Request) -> Response:
        nonlocal most_buffered
        async for chunk in request.stream():
            seen.update(chunk)
            most_buffered = max(most_buffered, request._buffered)
            if not got_first.is_set():
                got_first.set()
                await release.wait()
        return Response(status=200, body=b"done")

    body = body_of(16 * 2**20)
    async with serving(slow, limits=limits) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"PUT /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body))
        writer.write(body)
        await got_first.wait()
        conn = next(iter(server.connections))
        await wait_for_condition(lambda: "body" in conn._pause_reasons, timeout=10, what="reading paused")
        request = conn._active
        assert request is not None
        # what arrived and waits is bounded by the limit plus what one read can bring
        assert request._buffered <= limits.stream_buffer_bytes + 256 * 1024
        assert request._size < len(body)  # not all of it could be read
        release.set()
        resp = await read_response(reader)
        assert resp.status == 200 and resp.body == b"done"
        writer.close()
    assert seen.digest() == hashlib.sha256(body).digest()
    assert most_buffered <= limits.stream_buffer_bytes + 256 * 1024


@pytest.mark.parametrize("framing", ["declared", "chunked"])
async def test_a_streamed_body_over_max_body_bytes_is_413(tmp_path: Path, framing: str) -> None:
    limits = ServerLimits(max_body_bytes=100_000)
    async with serving(spooling_echo(spool_directory(tmp_path / "s")), limits=limits) as server:
        if framing == "declared":
            request = b"POST /a HTTP/1.1\r\nContent-Length: 100001\r\n\r\n"
            expected = b"request body of 100001 bytes is larger than the maximum of 100000 bytes"
        else:
            request = (b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + (b"c350\r\n" + b"x" * 50_000 + b"\r\n") * 3)
            expected = b"request body is larger than the maximum of 100000 bytes"
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request)
        resp = await read_response(reader)
        writer.close()
    assert resp.status == 413 and resp.body == expected and resp.header("Connection") == "close"
    assert os.listdir(tmp_path / "s") == []


async def test_body_and_stream_exclude_each_other() -> None:
    outcomes: list[str] = []

    async def both(request: Request) -> Response:
        for first, second in (("stream", "body"),) if request.raw_path == "/s" else (("body", "stream"),):
            if first == "stream":
                _ = [c async for c in request.stream()]
            else:
                await request.body()
            try:
                if second == "body":
                    await request.body()
                else:
                    await anext(request.stream())
            except RuntimeError as e:
                outcomes.append(str(e))
        return Response(status=200)

    async with serving(both) as server:
        for path in (b"/s", b"/b"):
            head, _ = await raw_exchange(server.port, b"POST %s HTTP/1.1\r\nContent-Length: 2\r\n"
                                         b"Connection: close\r\n\r\nab" % path)
            assert head.startswith(b"HTTP/1.1 200")
    assert outcomes == ["the request body is being streamed (Request.stream): it cannot also be read whole",
                        "the request body was already taken (body())"]


async def test_a_failing_or_miscounted_stream_aborts_the_connection_and_is_closed() -> None:
    closed: list[str] = []
    spools: list[Spool] = []

    async def handler(request: Request) -> Response:
        async def gen() -> AsyncIterator[bytes]:
            try:
                yield b"abc"
                if request.raw_path == "/raise":
                    raise OSError("disk gone")
                yield b"def"
            finally:
                closed.append(request.raw_path)
        if request.method == "HEAD":
            spool = await spool_of(b"0123456789")
            spools.append(spool)
            return Response(status=200, stream=spool.chunks_then_close(), length=spool.size)
        length = {"/short": 10, "/long": 4}.get(request.raw_path)
        return Response(status=200, stream=gen(), length=length)

    async with serving(handler) as server:
        for path, what in ((b"/raise", None), (b"/short", 10), (b"/long", 4)):
            head, rest = await raw_exchange(server.port, b"GET %s HTTP/1.1\r\n\r\n" % path)
            assert head.startswith(b"HTTP/1.1 200")  # the head was out before the stream failed
            if what is None:
                assert b"Transfer-Encoding: chunked" in head and not rest.endswith(b"0\r\n\r\n")
            else:
                assert b"Content-Length: %d" % what in head and len(rest) < what  # cut short, never overrun
        # HEAD: nothing of the stream is sent, and it is closed all the same (a spool's, before its first step)
        head, rest = await raw_exchange(server.port, b"HEAD /short HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert b"Content-Length: 10" in head and rest == b""
    assert closed == ["/raise", "/short", "/long"]
    assert len(spools) == 1 and spools[0].closed


async def test_a_response_with_both_a_body_and_a_stream_is_a_500() -> None:
    async def gen() -> AsyncIterator[bytes]:
        yield b"x"

    async def handler(request: Request) -> Response:
        return Response(status=200, body=b"a", stream=gen())

    async with serving(handler) as server:
        head, rest = await raw_exchange(server.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500") and rest == b"internal server error\n"


@pytest.mark.parametrize("known_length", [True, False])
async def test_the_client_sends_from_a_spool_and_reads_into_one_over_mutual_tls(
    tmp_path: Path, known_length: bool,
) -> None:
    pki: Pki = make_http_pki(tmp_path)
    directory = spool_directory(tmp_path / "s")
    body = body_of(3 * 2**20 + 5)
    sent = await spool_of(body, directory)
    async with serving(spooling_echo(directory, known_length=known_length),
                       ssl_context=pki.server_context()) as server:
        pool = ClientPool(("127.0.0.1", server.port), ssl=pki.client_context())
        try:
            for _ in range(2):  # the same spool sent twice, on the same kept-alive connection
                async with Spool(directory=directory, memory_limit=64 * 1024, sha512=True) as got:
                    resp = await pool.request_streamed("POST", "/x", [("Content-Type", "application/octet-stream")],
                                                       sent.chunks, length=sent.size if known_length else None,
                                                       sink=got)
                    assert resp.status == 200 and resp.body == b"" and got.finished
                    assert got.sha256 == hashlib.sha256(body).digest() == bytes.fromhex(resp.header("x-sha256") or "")
                    assert got.sha512 == hashlib.sha512(body).digest() and await got.read_all() == body
            assert pool.open_connections == 1
            # a body without a length goes chunked; an empty one too
            async with Spool() as got:
                resp = await pool.request_streamed("PUT", "/y", body=_nothing, sink=got)
                assert resp.header("x-size") == "0" and got.size == 0
        finally:
            await pool.close()
            sent.close()
    assert os.listdir(directory) == []


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def test_the_client_refuses_a_response_over_its_limit_or_its_sink_and_a_miscounted_body() -> None:
    async def big(request: Request) -> Response:
        await request.body()
        return Response(status=200, body=b"z" * 300_000)

    async with serving(big) as server:
        pool = ClientPool(("127.0.0.1", server.port), limits=ClientLimits(max_body_bytes=200_000))
        try:
            from gateway.proxy.http import ResponseTooLarge
            with pytest.raises(ResponseTooLarge, match="larger than the maximum of 200000 bytes"):
                async with Spool() as sink:
                    await pool.request_streamed("GET", "/", sink=sink)
            with pytest.raises(PayloadTooLarge, match="response body is larger than the maximum of 1000 bytes"):
                async with Spool(max_bytes=1000, what="response body") as sink:
                    await ClientPool(("127.0.0.1", server.port)).request_streamed("GET", "/", sink=sink)
            src = await spool_of(b"abc")
            with pytest.raises(ValueError, match="gave 3 bytes, not its length of 5"):
                async with Spool() as sink:
                    await pool.request_streamed("POST", "/", body=src.chunks, length=5, sink=sink)
            with pytest.raises(ValueError, match="length is the non-negative length of a request body"):
                async with Spool() as sink:
                    await pool.request_streamed("POST", "/", length=5, sink=sink)
        finally:
            await pool.close()


async def test_the_client_sees_a_connection_cut_during_a_streamed_response() -> None:
    async def cut(request: Request) -> Response:
        async def gen() -> AsyncIterator[bytes]:
            yield b"a" * 1000
            raise OSError("gone")
        return Response(status=200, stream=gen(), length=5000)

    async with serving(cut) as server:
        pool = ClientPool(("127.0.0.1", server.port))
        try:
            with pytest.raises(ConnectionLost):
                async with Spool() as sink:
                    await pool.request_streamed("POST", "/", sink=sink)
            assert pool.open_connections == 0
        finally:
            await pool.close()


async def test_a_stale_connection_is_retried_with_the_body_read_again() -> None:
    answered: list[int] = []

    async def stale_after_first(head: bytes, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if answered and answered[-1] == id(writer):
            return False  # the second request on this connection: closed without a byte of answer
        answered.append(id(writer))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        return True

    sent = await spool_of(b"0123456789")
    async with raw_peer(stale_after_first) as peer:
        pool = ClientPool(("127.0.0.1", peer.port))
        try:
            for _ in range(2):
                async with Spool() as got:
                    resp = await pool.request_streamed("POST", "/", body=sent.chunks, length=sent.size, sink=got,
                                                       retry_stale=True)
                    assert resp.status == 200 and await got.read_all() == b"ok"
        finally:
            await pool.close()
    assert peer.connections == 2 and len(peer.requests) == 3  # the second request sent twice, body and all


async def test_a_peer_that_reads_nothing_of_the_body_times_out() -> None:
    entered = asyncio.Event()

    async def never_reads(_head: bytes, _reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> bool:
        entered.set()
        await asyncio.Event().wait()  # holds the connection, reads nothing
        return False

    async def endless() -> AsyncIterator[bytes]:
        piece = body_of(1 << 20)
        while True:
            yield piece

    async with raw_peer(never_reads) as peer:
        pool = ClientPool(("127.0.0.1", peer.port))
        try:
            with pytest.raises(ResponseTimeout, match=r"the peer read nothing of the request body for 0\.5 s"):
                async with Spool() as got:
                    await pool.request_streamed("PUT", "/", body=endless, sink=got, read_timeout=0.5)
            assert entered.is_set() and pool.open_connections == 0
        finally:
            await pool.close()


# ---- resident memory for a large body ----------------------------------------------------------------------


LARGE = 256 * 2**20  # bytes: large against the bound, small enough to pass in a few seconds here


async def test_a_large_body_through_server_and_client_in_bounded_memory(tmp_path: Path) -> None:
    """256 MiB sent by the client from a generator, spooled by the server's handler while hashing, sent back
    from the spool and spooled by the client: both ends in this process, its peak RSS grows by less than the
    bound (the body passes twice through each end, once each way)."""
    pki: Pki = make_http_pki(tmp_path)
    directory = spool_directory(tmp_path / "s")
    piece = body_of(256 * 1024)
    expected = hashlib.sha256()
    for _ in range(LARGE // len(piece)):
        expected.update(piece)

    async def generated() -> AsyncIterator[bytes]:
        for _ in range(LARGE // len(piece)):
            yield piece

    limits = ServerLimits(max_body_bytes=2 * 2**30)
    async with serving(spooling_echo(directory), limits=limits, ssl_context=pki.server_context()) as server:
        pool = ClientPool(("127.0.0.1", server.port), ssl=pki.client_context(),
                          limits=ClientLimits(max_body_bytes=2 * 2**30))
        try:
            # a small exchange first, so that the TLS and HTTP machinery's own memory is in the baseline
            async with Spool() as warm:
                await pool.request_streamed("POST", "/", body=lambda: generated_small(piece), sink=warm)
            if not reset_peak():
                pytest.skip("this kernel does not let a process reset its peak RSS (clear_refs)")
            before = status_kib("VmRSS")
            async with Spool(directory=directory, max_bytes=2 * 2**30) as got:
                resp = await pool.request_streamed("POST", "/big", body=generated, length=LARGE, sink=got)
                assert resp.status == 200 and got.size == LARGE and got.sha256 == expected.digest()
                assert got.spilled and resp.header("x-sha256") == expected.hexdigest()
            growth = (status_kib("VmHWM") - before) * 1024
        finally:
            await pool.close()
    print(f"peak RSS growth {growth / 2**20:.1f} MiB for {LARGE >> 20} MiB each way")
    assert growth < RSS_BOUND, f"peak RSS grew by {growth / 2**20:.1f} MiB for a {LARGE >> 20} MiB body"
    assert os.listdir(directory) == []


async def generated_small(piece: bytes) -> AsyncIterator[bytes]:
    yield piece


async def test_a_whole_body_request_spills_a_large_response_into_the_sink_it_chooses(tmp_path: Path) -> None:
    big = os.urandom(3 * 2**20)

    async def handler(request: Request) -> Response:
        await request.body()
        if request.raw_path == "/small":
            return Response(status=200, body=b"small answer")

        async def gen() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 2**20):
                yield big[i:i + 2**20]
        # /big with its length declared, /chunked without
        return Response(status=200, stream=gen(), length=len(big) if request.raw_path == "/big" else None)

    directory = spool_directory(tmp_path / "spool")
    asked: list[int | None] = []
    made: list[Spool] = []

    def spill(declared: int | None) -> Spool | None:
        asked.append(declared)
        if declared is not None and declared <= 2**20:
            return None  # small: read whole
        made.append(Spool(directory=directory, memory_limit=64 * 1024))
        return made[-1]

    async with serving(handler) as server:
        pool = ClientPool(("127.0.0.1", server.port))
        try:
            for _ in range(2):  # the connection is reused after a spilled response
                small = await pool.request("POST", "/small", body=b"x", spill=spill)
                assert small.body == b"small answer"
                for path in ("/big", "/chunked"):
                    resp = await pool.request("POST", path, body=b"x", spill=spill)
                    assert resp.status == 200 and resp.body == b""
                    sink = made[-1]
                    assert sink.finished and sink.size == len(big) and sink.spilled
                    assert sink.sha256 == hashlib.sha256(big).digest()
                    assert await sink.read_all() == big
                    sink.close()
            assert asked == [len(b"small answer"), len(big), None] * 2
            assert pool.open_connections == 1
        finally:
            await pool.close()


async def test_a_spill_that_refuses_fails_the_request_and_closes_the_connection() -> None:
    async def handler(request: Request) -> Response:
        return Response(status=200, body=b"y" * 100)

    def spill(declared: int | None) -> Spool | None:
        raise PayloadTooLarge(f"no room for {declared} bytes")

    async with serving(handler) as server:
        pool = ClientPool(("127.0.0.1", server.port))
        try:
            with pytest.raises(PayloadTooLarge, match="no room for 100 bytes"):
                await pool.request("GET", "/", spill=spill)
            assert pool.open_connections == 0
            assert (await pool.request("GET", "/")).body == b"y" * 100  # a new connection serves the next
        finally:
            await pool.close()
