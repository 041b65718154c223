"""An HTTP/1.1 server: asyncio Protocol over ``httptools`` (llhttp), one request at a time per connection (I/O).

What it does, per connection:

- parses with ``httptools.HttpRequestParser`` (strict llhttp: a request with both ``Content-Length`` and
  ``Transfer-Encoding``, bad chunk framing or a malformed request line is refused); the handler sees the raw
  method, the raw target and the header pairs in order, with their names as received;
- calls the handler once the header block is complete; the body is read into memory as it arrives, bounded by
  ``max_body_bytes``, and the handler takes it with :meth:`Request.body` (``Content-Length`` or chunked; an
  ``Expect: 100-continue`` is answered when the handler first asks for the body, never when the declared length
  is over the limit), or streams it with :meth:`Request.stream` (chunk by chunk, reading paused while more than
  ``stream_buffer_bytes`` wait for the handler, so a body of any size allowed by ``max_body_bytes`` passes in
  bounded memory); until the handler asks for the body one way or the other, at most ``stream_buffer_bytes``
  of it are read;
- handles one request at a time: requests pipelined behind it are parsed and queued, and reading pauses until
  they are handled; responses go out in request order;
- keeps the connection alive unless the request or the protocol version says otherwise, the body was not read
  whole, or the server is closing (then ``Connection: close``);
- pauses reading while the transport's write buffer is above ``write_buffer_high`` (back-pressure), and starts
  no further request until it drains;
- writes a response whole (:attr:`Response.body`) or streamed (:attr:`Response.stream`: with ``Content-Length``
  when its length is known, else chunked), a streamed one chunk by chunk as the write buffer drains;
- answers by itself, with a small text body and ``Connection: close``: 400 for a malformed request, 414 for a
  target longer than ``max_target_bytes``, 431 for more than ``max_headers`` header lines or
  ``max_header_bytes`` of them, 408 when the header block is not complete ``header_timeout`` seconds after the
  request's first byte, 503 for a connection over ``max_connections``, and 500 (no detail) when the handler
  raises; an idle connection is closed after ``keepalive_timeout`` (or ``header_timeout`` before its first
  request), a body that stops arriving fails :meth:`Request.body` after ``body_timeout`` seconds;
- over TLS (the given ``ssl.SSLContext``) it reads the peer's certificate once per connection, after the
  handshake, and gives it to the handler (:attr:`Request.peer_cert`);
- what it answers by itself has the body and headers that ``render_refusal`` makes, when it is given one.

What it does not do: HTTP/2, upgrades (``Upgrade``/``CONNECT``: the request is handled and the connection then
closed), trailers (ignored), content coding (bodies pass byte for byte).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

import httptools
import structlog

from gateway.errors import PayloadTooLarge, RequestError
from gateway.proxy.http.types import FRAMING_HEADERS, BodyHold, Response, ServerLimits

log = structlog.get_logger("gateway.proxy.http")

Handler = Callable[["Request"], Awaitable[Response]]
RefusalRenderer = Callable[[int, str], Response]  # (status, message) -> what the server answers by itself

_NO_BODY_STATUS = frozenset({204, 304})
_NEVER = float("inf")
_REASONS = {s.value: s.phrase for s in HTTPStatus}


class Request:
    """One request as received. ``raw_headers`` are (name, value) byte pairs in order, names as sent."""

    __slots__ = (
        "_buffered", "_complete", "_conn", "_continue_sent", "_error", "_held", "_hold", "_over", "_size",
        "_taken", "_waiter", "_what", "chunks", "content_length", "expect_continue", "http_version", "keep_alive",
        "method", "peer_cert", "raw_headers", "raw_path", "remote", "tls",
    )

    def __init__(
        self, conn: _Connection, method: str, raw_path: str, raw_headers: list[tuple[bytes, bytes]],
        http_version: str, keep_alive: bool, content_length: int | None, expect_continue: bool,
    ) -> None:
        self._conn = conn
        self.method = method
        self.raw_path = raw_path
        self.raw_headers = raw_headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.expect_continue = expect_continue
        self.remote = conn.remote
        self.tls = conn.tls
        self.peer_cert = conn.peer_cert
        self.chunks: list[bytes] = []
        self._size = 0
        self._complete = False
        self._over = False  # more than max_body_bytes arrived (or were declared): the rest is discarded
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._hold: BodyHold | None = None
        self._held = 0
        self._continue_sent = False
        self._what = "request body"
        self._buffered = 0  # bytes in chunks not yet taken by a stream (or by a body() yet to be called)
        self._taken: str | None = None  # "body" or "stream" once the handler asked for the body one way

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), decoded as UTF-8 with surrogate escapes."""
        key = name.lower().encode("latin-1")
        for n, v in self.raw_headers:
            if n.lower() == key:
                return v.decode("utf-8", "surrogateescape")
        return None

    @property
    def body_complete(self) -> bool:
        return self._complete

    async def body(self, *, hold: BodyHold | None = None, what: str = "request body") -> bytes:
        """The whole body, once it has arrived; what it holds is taken from ``hold`` (the declared length at once,
        a chunked body as it arrives).

        Raises:
            PayloadTooLarge: (HTTP 413) the body is, or is declared, larger than ``max_body_bytes``.
            RequestError: (HTTP 400) the body was malformed, stopped arriving for ``body_timeout`` seconds, or
                the client closed the connection before sending all of it.
            Exception: whatever ``hold.take`` raises.
        """
        limit = self._conn.limits.max_body_bytes
        declared = self.content_length
        if declared is not None and declared > limit:
            raise PayloadTooLarge(f"{what} of {declared} bytes is larger than the maximum of {limit} bytes")
        if self._over:
            raise PayloadTooLarge(f"{what} is larger than the maximum of {limit} bytes")
        if self._error is not None:
            raise self._error
        if self._taken == "stream":
            raise RuntimeError("the request body is being streamed (Request.stream): it cannot also be read whole")
        if self._taken is None:
            self._taken = "body"
            self._conn.body_taken()
        if hold is not None:
            if declared:
                hold.take(declared, what)
                self._held = declared
            if self._size > self._held:
                hold.take(self._size - self._held, what)
                self._held = self._size
            self._hold = hold
            self._what = what
        while not self._complete:
            if self.expect_continue and not self._continue_sent:
                self._continue_sent = True
                self._conn.write_continue()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            if self._over:
                raise PayloadTooLarge(f"{what} is larger than the maximum of {limit} bytes")
            if self._error is not None:
                raise self._error
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)

    async def stream(self, *, what: str = "request body") -> AsyncIterator[bytes]:
        """The body as it arrives, chunk by chunk, with back-pressure: reading pauses while more than
        ``stream_buffer_bytes`` have arrived that the consumer has not taken. Bounded by ``max_body_bytes``
        (``Content-Length`` or chunked); ``Expect: 100-continue`` is answered on the first step. Nothing is
        taken from a :class:`BodyHold`: what the stream holds is bounded by ``stream_buffer_bytes``.

        Raises:
            PayloadTooLarge: (HTTP 413) the body is, or is declared, larger than ``max_body_bytes`` (a chunked
                body: once that many bytes have come, after the chunks before them were given).
            RequestError: (HTTP 400) the body was malformed, stopped arriving for ``body_timeout`` seconds, or
                the client closed the connection before sending all of it.
            RuntimeError: :meth:`body` or :meth:`stream` was called before for this request.
        """
        conn = self._conn
        limit = conn.limits.max_body_bytes
        declared = self.content_length
        if declared is not None and declared > limit:
            raise PayloadTooLarge(f"{what} of {declared} bytes is larger than the maximum of {limit} bytes")
        if self._taken is not None:
            raise RuntimeError(f"the request body was already taken ({self._taken}())")
        self._taken = "stream"
        conn.body_taken()
        while True:
            if self._over:
                raise PayloadTooLarge(f"{what} is larger than the maximum of {limit} bytes")
            if self._error is not None:
                raise self._error
            if self.chunks:
                chunks, self.chunks = self.chunks, []
                self._buffered = 0
                conn.body_drained()
                for chunk in chunks:
                    yield chunk
                continue
            if self._complete:
                return
            if self.expect_continue and not self._continue_sent:
                self._continue_sent = True
                conn.write_continue()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    # ---- fed by the connection ----

    def _feed(self, data: bytes) -> None:
        if self._over or self._error is not None:
            return
        self._size += len(data)
        if self._size > self._conn.limits.max_body_bytes:
            self._over = True
            self.chunks = []
            self._wake()
            return
        self.chunks.append(data)
        if self._taken != "body":
            self._buffered += len(data)
            if self._buffered > self._conn.limits.stream_buffer_bytes:
                self._conn.body_behind()
            if self._taken == "stream":
                self._wake()
                return
        if self._hold is not None and self._size > self._held:
            try:
                self._hold.take(self._size - self._held, self._what)
            except Exception as e:
                self._fail(e)
                return
            self._held = self._size

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self._complete:
            self._error = error
            self.chunks = []
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Refused(Exception):
    """Raised inside a parser callback: answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Connection(asyncio.Protocol):
    """One client connection: parser callbacks, the request queue, timers and flow control."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.remote: str | None = None
        self.tls = False
        self.peer_cert: bytes | None = None
        # the request being parsed
        self._url = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_headers = False
        self._head_fed = 0
        self._parsing: Request | None = None
        # handling
        self._active: Request | None = None
        self._pending: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._refusal: tuple[int, str] | None = None  # answered after the requests before it
        self._closing = False  # no further request is read; close once the queue is answered
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None  # a streamed response waiting for the write buffer
        self._pause_reasons: set[str] = set()
        # one deadline at a time, checked by the server's sweep (no timer handle per request)
        self.deadline = _NEVER
        self._timer_kind = ""

    # ---- asyncio.Protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = tr = cast(asyncio.Transport, transport)
        server = self.server
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) and peer else None
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            self.tls = True
            self.peer_cert = ssl_object.getpeercert(binary_form=True)
        if len(server.connections) >= self.limits.max_connections or server.closing:
            self._write_plain(503, "too many connections\n" if not server.closing else "shutting down\n")
            self._close()
            return
        server.connections.add(self)
        tr.set_write_buffer_limits(high=self.limits.write_buffer_high)
        self._arm("fresh", self.limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._in_headers:
            self._head_fed += len(data)
            # httptools gathers a header line in memory before handing it over: bound what one head may feed
            if self._head_fed > 2 * (self.limits.max_target_bytes + self.limits.max_header_bytes) + 256 * 1024:
                self._refuse(431, "request header block too large")
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade/CONNECT: the request is handled like any other, then the connection ends
            self._stop_reading()
        except httptools.HttpParserError as e:
            refused = e.__context__ if isinstance(e.__context__, _Refused) else None
            if refused is not None:
                self._refuse(refused.status, refused.message)
            else:
                self._refuse(400, f"malformed request: {e}")

    def eof_received(self) -> bool | None:
        if self._parsing is not None:  # its header block is complete, its body is not
            self._parsing._fail(RequestError("the client closed the connection before sending the whole request body"))
        self._stop_reading()
        if self._active is None and not self._pending:
            return False  # close now
        return True  # half-closed: answer what was asked, then close

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._wake_drain()
        self.server.connections.discard(self)
        self._closing = True
        for req in (self._parsing, self._active, *self._pending):
            if req is not None:
                req._fail(RequestError("the client closed the connection before sending the whole request body"))
        self._pending.clear()
        self.server.connection_closed()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause("writing")

    def resume_writing(self) -> None:
        self._write_paused = False
        self._resume("writing")
        self._wake_drain()
        self._next()

    def _wake_drain(self) -> None:
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---- a streamed request body: back-pressure from its consumer ----

    def body_behind(self) -> None:
        """More of the body being parsed is buffered than the handler has taken: stop reading (and its body
        timer, as the wait is ours) until it catches up."""
        if "body" not in self._pause_reasons:
            self._pause("body")
            if self._timer_kind == "body":
                self._disarm()

    def body_drained(self) -> None:
        """The handler took what was buffered: read on."""
        if "body" in self._pause_reasons:
            self._resume("body")
            if self._parsing is not None and self._timer_kind == "body":
                self._arm("body", self.limits.body_timeout)

    def body_taken(self) -> None:
        """The handler asked for the body (whole or streamed): what was paused for it reads on."""
        self.body_drained()

    # ---- httptools callbacks ----

    def on_message_begin(self) -> None:
        self._url.clear()
        self._headers = []
        self._head_fed = 0
        self._in_headers = True
        self._arm("headers", self.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_target_bytes:
            raise _Refused(414, f"request target longer than {self.limits.max_target_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        # what one head may feed is bounded in data_received; the limits are checked when the block is complete
        if self._in_headers:  # not a trailer of a chunked body (ignored)
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        limits = self.limits
        headers = self._headers
        if len(headers) > limits.max_headers:
            raise _Refused(431, f"more than {limits.max_headers} request header lines")
        content_length: int | None = None
        expect = False
        size = 0
        for name, value in headers:
            size += len(name) + len(value)
            lname = name.lower()
            if lname == b"content-length":
                content_length = int(value)  # llhttp has checked the digits and refused repeats that differ
            elif lname == b"expect":
                expect = value.strip().lower() == b"100-continue"
        if size > limits.max_header_bytes:
            raise _Refused(431, f"request header block larger than {limits.max_header_bytes} bytes")
        self._in_headers = False
        keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        req = Request(
            self, parser.get_method().decode("ascii"), self._url.decode("utf-8", "surrogateescape"), self._headers,
            parser.get_http_version(), keep_alive, content_length, expect,
        )
        if content_length is not None and content_length > self.limits.max_body_bytes:
            req._over = True  # declared over the limit: nothing of it is kept
        self._parsing = req
        self._pending.append(req)
        self._arm("body", self.limits.body_timeout)
        if self._active is not None:
            self._pause("pipelined")
        else:
            self._next()

    def on_body(self, body: bytes) -> None:
        req = self._parsing
        if req is not None:
            self.deadline = self.loop.time() + self.limits.body_timeout
            req._feed(body)

    def on_message_complete(self) -> None:
        req = self._parsing
        if req is not None:
            self._parsing = None
            req._finish()
        self._disarm()

    # ---- handling ----

    def _next(self) -> None:
        """Start the next queued request, or answer a refusal, or close, or wait idle."""
        if self._active is not None or self._write_paused or self.transport is None:
            return
        if self._pending:
            req = self._pending.popleft()
            self._active = req
            if not self._pending:
                self._resume("pipelined")
            self._task = self.loop.create_task(self._run(req))
            return
        if self._refusal is not None:
            status, message = self._refusal
            self._refusal = None
            self._write_plain(status, message + "\n")
            self._close()
        elif self._closing or self.server.closing:
            self._close()
        elif self._parsing is None and not self._in_headers:
            self._arm("idle", self.limits.keepalive_timeout)

    async def _run(self, req: Request) -> None:
        stream: AsyncIterable[bytes] | None = None
        try:
            resp = await self.server.handler(req)
            if not isinstance(resp, Response):
                raise TypeError(f"the handler returned {type(resp).__name__}, not a Response")
            stream = resp.stream
            if stream is not None and resp.body:
                raise ValueError("a response has either a body or a stream, not both")
            if resp.length is not None and (stream is None or resp.length < 0):
                raise ValueError("a response's length is the non-negative length of its stream")
            data = self._serialise(req, resp)
        except Exception:
            log.exception("HTTP handler failed", method=req.method, path=req.raw_path[:200], peer=req.remote)
            if stream is not None:
                await _aclose(stream)
            stream = None
            resp = self.server.refusal(500, "internal server error")
            data = self._serialise(req, resp)
        if stream is not None:
            await self._run_streamed(req, resp, stream, data)
            return
        self._active = None
        self._task = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if self._closing and self._refusal is None:
            self._stop_reading()
            self._close()
        else:
            self._next()  # the next queued request, or a refusal of what followed this one

    def _serialise(self, req: Request, resp: Response) -> bytes:
        status = resp.status
        if not 100 <= status <= 599 or status == 101:
            raise ValueError(f"response status {status} cannot be sent")
        # the connection goes on only if this request was read whole and nothing says otherwise
        whole = req._complete and not req._over and req._error is None
        # a streamed response of unknown length to HTTP/1.0 ends with the connection
        unframed = resp.stream is not None and resp.length is None and req.http_version == "1.0"
        keep = (req.keep_alive and whole and not self._closing and not self.server.closing
                and self._refusal is None and not unframed)
        # a refusal of what was pipelined behind this request follows it, and that one says close
        refusal_follows = self._refusal is not None and req.keep_alive and whole and not self.server.closing
        if not keep:
            self._closing = True
        reason = resp.reason if resp.reason is not None else _REASONS.get(status, "Unknown")
        lines = [f"HTTP/1.1 {status} {reason}\r\n"]
        n = 1
        dated = False
        for name, value in resp.headers:
            lname = name.lower()
            if lname in FRAMING_HEADERS:
                continue
            dated = dated or lname == "date"
            lines.append(f"{name}: {value}\r\n")
            n += 1
        body = resp.body
        if status in _NO_BODY_STATUS or status < 200:
            body = b""
        elif resp.stream is None:
            lines.append(f"Content-Length: {len(body)}\r\n")
            n += 1
        elif resp.length is not None:
            lines.append(f"Content-Length: {resp.length}\r\n")
            n += 1
        elif not unframed:
            lines.append("Transfer-Encoding: chunked\r\n")
            n += 1
        if not dated:  # a service's own Date passes through
            lines.append(f"Date: {self.server.date()}\r\n")
            n += 1
        if not keep and not refusal_follows:
            lines.append("Connection: close\r\n")
            n += 1
        elif req.http_version == "1.0":
            lines.append("Connection: keep-alive\r\n")
            n += 1
        head = "".join(lines)
        # one CR and one LF per line, or a name, value or reason would split the response
        if head.count("\n") != n or head.count("\r") != n:
            raise ValueError("a response header name, value or reason holds CR or LF")
        data = head.encode("utf-8", "surrogateescape") + b"\r\n"
        if req.method == "HEAD":
            return data
        return data + body if body else data

    async def _run_streamed(
        self, req: Request, resp: Response, stream: AsyncIterable[bytes], head: bytes,
    ) -> None:
        """Write the head, then the stream's chunks as they come (waiting while the write buffer is above
        ``write_buffer_high``, at most ``body_timeout`` seconds each time); abort the connection if the
        stream fails, gives other than ``length`` bytes, or the client stops reading."""
        transport = self.transport
        sends_body = req.method != "HEAD" and resp.status >= 200 and resp.status not in _NO_BODY_STATUS
        chunked = sends_body and resp.length is None and req.http_version != "1.0"
        failure: str | None = None
        try:
            if transport is None or transport.is_closing():
                failure = "the connection closed before the response"
            else:
                transport.write(head)
                if sends_body:
                    failure = await self._write_stream(transport, stream, resp.length, chunked)
        except Exception as e:
            log.exception("streamed response failed", method=req.method, path=req.raw_path[:200], peer=req.remote)
            failure = f"the response stream raised {type(e).__name__}"
        finally:
            await _aclose(stream)
        self._active = None
        self._task = None
        if failure is not None:
            log.warning("streamed response aborted", reason=failure, path=req.raw_path[:200], peer=req.remote)
            self._closing = True
            self._disarm()
            if self.transport is not None:
                self.transport.abort()
            return
        if self._closing and self._refusal is None:
            self._stop_reading()
            self._close()
        else:
            self._next()

    async def _write_stream(
        self, transport: asyncio.Transport, stream: AsyncIterable[bytes], length: int | None, chunked: bool,
    ) -> str | None:
        """The chunks of ``stream`` onto ``transport``; what went wrong, or None."""
        sent = 0
        timeout = self.limits.body_timeout
        async for chunk in stream:
            if not chunk:
                continue
            if transport.is_closing():
                return "the client closed the connection during the response"
            sent += len(chunk)
            if length is not None and sent > length:
                return f"the response stream gave more than its length of {length} bytes"
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            if self._write_paused:
                self._drain = self.loop.create_future()
                try:
                    async with asyncio.timeout(timeout):
                        await self._drain
                except TimeoutError:
                    return f"the client read nothing of the response for {timeout:g} s"
        if length is not None and sent != length:
            return f"the response stream gave {sent} bytes, not its length of {length}"
        if chunked:
            transport.write(b"0\r\n\r\n")
        return None

    def write_continue(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _write_plain(self, status: int, text: str) -> None:
        resp = self.server.refusal(status, text.rstrip("\n"))
        body = resp.body
        extra = "".join(f"{n}: {v}\r\n" for n, v in resp.headers if n.lower() not in FRAMING_HEADERS)
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n{extra}"
                f"Content-Length: {len(body)}\r\nDate: {self.server.date()}\r\nConnection: close\r\n\r\n")
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(head.encode("utf-8", "surrogateescape") + body)

    def _refuse(self, status: int, message: str) -> None:
        """A request that cannot be parsed: fail its body if a handler has it, else answer ``status`` once the
        requests before it are answered; read nothing more."""
        self._stop_reading()
        req = self._parsing
        if req is not None and not req._complete:
            req._fail(RequestError(f"malformed request body: {message}"))
        elif self._in_headers:
            self._refusal = (status, message)
        self._in_headers = False
        self._next()

    def _stop_reading(self) -> None:
        self._closing = True
        self._disarm()
        self._pause("closing")

    def _close(self) -> None:
        self._closing = True
        self._disarm()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _pause(self, reason: str) -> None:
        if not self._pause_reasons and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def _resume(self, reason: str) -> None:
        if reason in self._pause_reasons:
            self._pause_reasons.discard(reason)
            if not self._pause_reasons and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    # ---- timers: one at a time ----

    def _arm(self, kind: str, seconds: float) -> None:
        self._timer_kind = kind
        self.deadline = self.loop.time() + seconds

    def _disarm(self) -> None:
        self.deadline = _NEVER

    def on_deadline(self) -> None:
        """The deadline has passed (called by the server's sweep)."""
        self.deadline = _NEVER
        kind = self._timer_kind
        if kind == "headers":
            self._refusal = (408, f"request header block not complete within {self.limits.header_timeout:g} s")
            self._in_headers = False
            self._stop_reading()
            self._next()
        elif kind == "body":
            req = self._parsing
            if req is None:
                return
            req._fail(RequestError(f"no byte of the request body arrived for {self.limits.body_timeout:g} s"))
            self._stop_reading()
            self._next()
        elif self._active is None and not self._pending:  # "fresh" or "idle": nothing asked, nothing to answer
            self._close()

    def close_idle(self) -> None:
        """For a graceful close: end the connection now unless a request is being handled or queued."""
        if self._active is None and not self._pending:
            self._close()
        else:
            self._stop_reading()


async def _aclose(stream: AsyncIterable[bytes]) -> None:
    """Close a response stream that can be closed (an async generator), so that its ``finally`` runs."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.exception("closing a response stream failed")


class HttpServer:
    """Serves ``handler`` on one listening socket (see the module docstring for what it does).

    ``render_refusal(status, message)`` makes the response of what the server answers by itself (the refusals
    of the module docstring, and a handler that raised); its status line, ``Content-Length``, ``Date`` and
    ``Connection: close`` stay the server's. Without it, a short ``text/plain`` body.
    """

    def __init__(
        self, handler: Handler, *, limits: ServerLimits | None = None, render_refusal: RefusalRenderer | None = None,
    ) -> None:
        self.handler = handler
        self.render_refusal = render_refusal
        self.limits = limits if limits is not None else ServerLimits()
        self.connections: set[_Connection] = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._date_second = -1
        self._date = ""
        self._drained: asyncio.Event | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._tick = 1.0

    def refusal(self, status: int, message: str) -> Response:
        """What the server answers by itself with ``status`` (``render_refusal``'s response, or plain text)."""
        if self.render_refusal is not None:
            return self.render_refusal(status, message)
        return Response(status=status, headers=[("Content-Type", "text/plain; charset=utf-8")],
                        body=(message + "\n").encode())

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the server is not started"
        return self._loop

    async def start(
        self, host: str | None = None, port: int = 0, *, ssl: ssl.SSLContext | None = None, backlog: int = 1024,
        reuse_port: bool | None = None, sock: Any = None,
    ) -> None:
        """Listen on ``host``:``port`` (or on ``sock``), over TLS with ``ssl`` if given."""
        self._loop = asyncio.get_running_loop()
        limits = self.limits
        self._tick = min(1.0, limits.header_timeout / 4, limits.body_timeout / 4, limits.keepalive_timeout / 4)
        self._sweeper = self._loop.call_later(self._tick, self._sweep)
        if sock is not None:
            self._server = await self._loop.create_server(self._protocol, sock=sock, ssl=ssl, backlog=backlog)
        else:
            self._server = await self._loop.create_server(
                self._protocol, host, port, ssl=ssl, backlog=backlog, reuse_port=reuse_port,
            )

    def _protocol(self) -> _Connection:
        return _Connection(self)

    def _sweep(self) -> None:
        """Every ``tick`` seconds (a quarter of the shortest timeout, at most 1 s): act on passed deadlines."""
        now = self.loop.time()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.on_deadline()
        self._sweeper = self.loop.call_later(self._tick, self._sweep)

    @property
    def port(self) -> int:
        """The port of the first listening socket."""
        assert self._server is not None and self._server.sockets, "the server is not started"
        return int(self._server.sockets[0].getsockname()[1])

    def date(self) -> str:
        """The ``Date`` header value, made once per second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = formatdate(now, usegmt=True)
        return self._date

    def connection_closed(self) -> None:
        if self._drained is not None and not self.connections:
            self._drained.set()

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109  # a grace period, not a deadline
        """Stop accepting; end idle connections now; let requests being handled finish and answer them with
        ``Connection: close`` (queued pipelined ones are dropped); after ``timeout`` seconds abort what is left."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_idle()
        if self.connections:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                for conn in list(self.connections):
                    if conn.transport is not None:
                        conn.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            await self._server.wait_closed()


__all__ = ["Handler", "HttpServer", "RefusalRenderer", "Request"]
