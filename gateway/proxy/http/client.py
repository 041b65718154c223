"""A pool of kept-alive HTTP/1.1 connections to one address, over TLS when given a context (I/O).

One :class:`ClientPool` per peer address. Per request it takes the most recently used idle connection (or opens
one, up to ``max_connections``; past that, requests wait for one), writes the request in one piece and reads the
whole response with ``httptools.HttpResponseParser``:

- **the peer check**: ``check_peer(der)`` is awaited with the peer's certificate (DER, or None without TLS) right
  after the TLS handshake of a new connection and each time a pooled one is taken again, always before a request
  byte is written; if it raises, the connection is closed and the error propagates unchanged;
- **timeouts**: ``connect_timeout`` covers TCP connect and TLS handshake; the read timeout (``read_timeout``, or
  the request's own) runs from the request's write to the response's last byte;
- **bodies**: ``Content-Length``, chunked, or (without either) up to the connection's end; bounded by
  ``max_body_bytes`` (:class:`~gateway.proxy.http.types.ResponseTooLarge`, the connection closed, the rest
  unread); what is held is taken from ``hold`` as it arrives; a response to ``HEAD`` and 1xx/204/304 have none;
  informational (1xx) responses before the final one are skipped;
- **streamed bodies** (:meth:`ClientPool.request_streamed`): the request body is written chunk by chunk from a
  :data:`~gateway.proxy.http.types.BodySource` as the write buffer drains (``Content-Length`` when its length is
  given, else chunked), and the response body goes to a :class:`~gateway.proxy.http.types.BodySink` as it
  arrives, reading paused while more than :data:`STREAM_BUFFER_BYTES` wait for the sink;
- **reuse**: a connection goes back to the pool only when its response was read whole and both sides allow
  keep-alive (HTTP/1.1 without ``Connection: close``, or HTTP/1.0 with ``Connection: keep-alive``); it is
  closed after ``idle_timeout`` seconds unused, and never handed out once the peer has closed it;
- **a stale connection**: when a *reused* connection ends before any byte of the response arrived, the peer
  most likely closed it while idle, just as the request went out; the request is sent once more on a new
  connection only if it may be repeated: by default for the methods RFC 9110 calls idempotent (GET, HEAD,
  OPTIONS, TRACE, PUT, DELETE), otherwise only when the caller passes ``retry_stale=True`` (because it has
  another way to make a repeat harmless, as the server-to-server hop has: the provider refuses a second
  request with the same signed ``X-Road-Request-Id``). A fresh connection is never retried, nor a request
  whose response had begun.

Framing headers (``Content-Length``, ``Transfer-Encoding``, ``Connection``, ``Keep-Alive``) are the pool's: the
caller's are dropped. ``Host`` is added when the caller gives none. Nothing else is added: no ``User-Agent``,
``Accept`` or ``Accept-Encoding``, no cookies, no content coding (bodies pass byte for byte).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import httptools

from gateway.proxy.http.types import (
    FRAMING_HEADERS,
    BodyHold,
    BodySink,
    BodySource,
    ClientLimits,
    ClientResponse,
    ConnectFailed,
    ConnectionLost,
    HttpClientError,
    MalformedResponse,
    ResponseTimeout,
    ResponseTooLarge,
)

PeerCheck = Callable[[bytes | None], Awaitable[None]]

Spill = Callable[[int | None], BodySink | None]
"""A whole-body request's choice, once the response's head has come, of a sink for its body: called with the
declared ``Content-Length`` (None when chunked or delimited by the connection's end), it returns a sink to
write the body into (``ClientPool.request_streamed`` does), or None to read it whole."""

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110 9.2.2
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # sent with Content-Length: 0 when their body is empty
STREAM_BUFFER_BYTES = 256 * 1024  # bytes of a streamed response body read but not yet taken by its sink


class _Limit(Exception):
    """Raised inside a parser callback to stop parsing with ``error``."""

    def __init__(self, error: HttpClientError) -> None:
        super().__init__(str(error))
        self.error = error


class _Connection(asyncio.Protocol):
    """One connection: writes a request, parses its response, tells the pool whether it may be reused."""

    def __init__(self, pool: ClientPool) -> None:
        self.pool = pool
        self.limits = pool.limits
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer_cert: bytes | None = None
        self.closed = False
        self.counted = True  # holds one of the pool's max_connections until discarded
        self.idle_since = 0.0
        self._waiter: asyncio.Future[ClientResponse] | None = None
        # a streamed exchange: the response body's sink, its pump's wake-up, the request's wait for the buffer
        self._sink: BodySink | None = None
        self._spill: Spill | None = None  # a whole-body exchange's choice of a sink, once the head has come
        self._pump: asyncio.Future[None] | None = None
        self._buffered = 0
        self._read_paused = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self._reason = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_fed = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self._status = 0
        self._in_headers = True
        self._until_eof = False
        self._informational = False
        self._got_bytes = False
        self._head = False
        self._hold: BodyHold | None = None
        self._what = "response body"
        self.reusable = False

    # ---- asyncio.Protocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast(asyncio.Transport, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            self.peer_cert = ssl_object.getpeercert(binary_form=True)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        self._got_bytes = True
        if self._in_headers:
            self._head_fed += len(data)
            if self._head_fed > 2 * self.limits.max_header_bytes + 256 * 1024:
                self._fail(MalformedResponse("response header block too large"))
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            limit = e.__context__ if isinstance(e.__context__, _Limit) else None
            self._fail(limit.error if limit is not None else MalformedResponse(f"malformed response: {e}"))

    def eof_received(self) -> bool | None:
        self._ended()
        return False

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_pump(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None and not pump.done():
            pump.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    def _ended(self, exc: Exception | None = None) -> None:
        self._wake_drain()
        self._wake_pump()
        was_closed, self.closed = self.closed, True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._until_eof and not self._in_headers:
                self.reusable = False
                waiter.set_result(self._response())  # the body ran to the connection's end, as its framing said
            else:
                waiter.set_exception(ConnectionLost(
                    "the connection ended before the whole response arrived"
                    + (f": {exc}" if exc is not None else "")))
        if not was_closed:
            self.pool._discard(self)

    # ---- httptools callbacks ----

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        # what one head may feed is bounded in data_received; the limits are checked when the block is complete
        if self._in_headers:  # not a trailer of a chunked body (ignored)
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        limits = self.limits
        headers = self._headers
        if len(headers) > limits.max_headers:
            raise _Limit(MalformedResponse(f"more than {limits.max_headers} response header lines"))
        self._in_headers = False
        status = self.parser.get_status_code()
        self._status = status
        if 100 <= status < 200:
            self._informational = True
            return
        if self._head or status in (204, 304):
            # no body follows, whatever Content-Length says: the message ends here (a fresh parser next time)
            self._complete(self.parser.should_keep_alive())
            self.parser = httptools.HttpResponseParser(self)
            return
        framed = False
        size = 0
        declared: int | None = None
        for name, value in headers:
            size += len(name) + len(value)
            lname = name.lower()
            if lname == b"content-length":
                framed = True
                declared = int(value)
                if declared > self.limits.max_body_bytes:
                    raise _Limit(self._too_large(declared))
            elif lname == b"transfer-encoding":
                framed = True
                declared = None
        if size > limits.max_header_bytes:
            raise _Limit(MalformedResponse(f"response header block larger than {limits.max_header_bytes} bytes"))
        self._until_eof = not framed
        spill = self._spill
        if spill is not None:
            try:
                sink = spill(declared)
            except Exception as e:
                raise _Limit(_HoldRefused(e)) from e
            if sink is not None:
                self._sink = sink
                self._buffered = 0

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.limits.max_body_bytes:
            raise _Limit(self._too_large(None))
        self._chunks.append(body)
        if self._sink is not None:
            self._buffered += len(body)
            if self._buffered > STREAM_BUFFER_BYTES and not self._read_paused and self.transport is not None:
                self._read_paused = True
                self.transport.pause_reading()
            self._wake_pump()
            return
        if self._hold is not None:
            try:
                self._hold.take(len(body), self._what)
            except Exception as e:
                raise _Limit(_HoldRefused(e)) from e

    def on_message_complete(self) -> None:
        if self._informational:  # 100 Continue, 103 Early Hints: the final response follows
            self._informational = False
            self._reason = bytearray()
            self._headers = []
            self._head_fed = 0
            self._in_headers = True
            return
        if self._waiter is not None and not self._waiter.done():
            self._complete(self.parser.should_keep_alive() and not self._until_eof)

    # ---- the exchange ----

    def _too_large(self, declared: int | None) -> ResponseTooLarge:
        limit = self.limits.max_body_bytes
        size = f" of {declared} bytes" if declared is not None else ""
        return ResponseTooLarge(f"{self._what}{size} is larger than the maximum of {limit} bytes", limit=limit)

    def _response(self) -> ClientResponse:
        chunks = self._chunks
        return ClientResponse(
            status=self._status, reason=self._reason.decode("latin-1"),
            http_version=self.parser.get_http_version(), raw_headers=self._headers,
            body=b"" if self._sink is not None else chunks[0] if len(chunks) == 1 else b"".join(chunks),
        )

    def _complete(self, keep_alive: bool) -> None:
        self.reusable = keep_alive
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(self._response())
        self._wake_pump()

    def _fail(self, error: BaseException) -> None:
        self.reusable = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error.error if isinstance(error, _HoldRefused) else error)
        self._wake_pump()
        self.close()

    async def exchange(
        self, data: bytes, *, head: bool, hold: BodyHold | None, what: str, read_timeout: float | None,
        spill: Spill | None = None,
    ) -> ClientResponse:
        self._reset()
        self._head = head
        self._hold = hold
        self._what = what
        self._spill = spill
        self._sink = None
        loop = self.pool.loop
        waiter: asyncio.Future[ClientResponse] = loop.create_future()
        self._waiter = waiter
        assert self.transport is not None
        self.transport.write(data)
        timer = None
        if read_timeout is not None:
            timer = loop.call_later(read_timeout, self._timed_out, read_timeout)
        try:
            if spill is None:
                return await waiter
            return await self._pump_response(waiter)
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
            self._hold = None
            self._spill = None
            self._sink = None
            self._pump = None

    async def _pump_response(self, waiter: asyncio.Future[ClientResponse]) -> ClientResponse:
        """Wait for the response; once a sink has been chosen for its body (``spill``), write the body's chunks
        to it as they arrive (reading paused while more than :data:`STREAM_BUFFER_BYTES` wait), then finish it."""
        loop = self.pool.loop
        transport = self.transport
        assert transport is not None
        while True:
            if waiter.done() and waiter.exception() is not None:
                waiter.result()  # raises
            sink = self._sink
            if sink is not None and self._chunks:
                chunks, self._chunks = self._chunks, []
                self._buffered = 0
                if self._read_paused and not self.closed:
                    self._read_paused = False
                    transport.resume_reading()
                for chunk in chunks:
                    await sink.write(chunk)
                continue
            if waiter.done():
                break
            self._pump = loop.create_future()
            await self._pump
        resp = waiter.result()
        if self._sink is not None:
            await self._sink.finish()
        return resp

    def _timed_out(self, timeout: float) -> None:
        self._fail(ResponseTimeout(f"no whole response within {timeout:g} s"))

    async def exchange_streamed(
        self, head: bytes, body: BodySource | None, length: int | None, *, head_method: bool, sink: BodySink,
        what: str, read_timeout: float | None,
    ) -> ClientResponse:
        """Write ``head``, then the body's chunks as the write buffer drains; read the response, its body into
        ``sink`` as it arrives (reading paused while more than :data:`STREAM_BUFFER_BYTES` wait for the sink)."""
        self._reset()
        self._head = head_method
        self._what = what
        self._sink = sink
        self._buffered = 0
        loop = self.pool.loop
        waiter: asyncio.Future[ClientResponse] = loop.create_future()
        self._waiter = waiter
        transport = self.transport
        assert transport is not None
        timer = None
        try:
            transport.write(head)
            if body is not None:
                await self._send_body(transport, body, length, read_timeout)
            if read_timeout is not None:
                timer = loop.call_later(read_timeout, self._timed_out, read_timeout)
            return await self._pump_response(waiter)  # the sink is set: the body goes to it as it comes
        finally:
            if timer is not None:
                timer.cancel()
            if not waiter.done():
                waiter.cancel()
            elif not waiter.cancelled():
                waiter.exception()  # retrieved: the error (if any) has been raised, or another has
            self._waiter = None
            self._sink = None
            self._pump = None

    async def _send_body(
        self, transport: asyncio.Transport, body: BodySource, length: int | None, read_timeout: float | None,
    ) -> None:
        """The request body's chunks onto ``transport`` (chunked framing without ``length``); stops early when
        the response has ended or failed (a server may answer before it has read the body). A peer that reads
        nothing of it for ``read_timeout`` seconds fails it with :class:`ResponseTimeout`."""
        sent = 0
        waiter = self._waiter
        async for chunk in body():
            if waiter is not None and waiter.done():
                self.reusable = False  # answered (413, for instance) or failed: the rest is not wanted
                return
            if self.closed:
                raise ConnectionLost("the connection ended while the request body was being sent")
            if not chunk:
                continue
            sent += len(chunk)
            if length is not None and sent > length:
                raise ValueError(f"the request body gave more than its length of {length} bytes")
            if length is None:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            if self._write_paused:
                self._drain = self.pool.loop.create_future()
                try:
                    async with asyncio.timeout(read_timeout):
                        await self._drain
                except TimeoutError:
                    raise ResponseTimeout(
                        f"the peer read nothing of the request body for {read_timeout:g} s") from None
        if length is not None and sent != length:
            raise ValueError(f"the request body gave {sent} bytes, not its length of {length}")
        if length is None:
            transport.write(b"0\r\n\r\n")

    @property
    def response_began(self) -> bool:
        return self._got_bytes

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if not self.closed:
            self.closed = True
            self.pool._discard(self)


class _HoldRefused(HttpClientError):
    """Carries what ``hold.take`` raised out of the parser."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class ClientPool:
    """Kept-alive connections to one ``(host, port)`` (see the module docstring for what it does)."""

    def __init__(
        self, address: tuple[str, int], *, ssl: ssl.SSLContext | None = None, check_peer: PeerCheck | None = None,
        limits: ClientLimits | None = None,
    ) -> None:
        self.address = address
        self.limits = limits if limits is not None else ClientLimits()
        self._ssl = ssl
        self._check_peer = check_peer
        self._idle: list[_Connection] = []
        self._open = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        host, port = address
        self._host_header = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def open_connections(self) -> int:
        """Connections open now, idle or in use."""
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b"", *,
        hold: BodyHold | None = None, what: str = "response body", read_timeout: float | None = None,
        retry_stale: bool | None = None, spill: Spill | None = None,
    ) -> ClientResponse:
        """Send one request, read its whole response.

        ``target`` is sent as given (origin form: path and query, already encoded). ``read_timeout`` replaces
        the limits' for this request. ``retry_stale``: see the module docstring. ``spill``: once the response's
        head has come, it may give a sink for the body (a large one), which is then written there as it
        arrives, as by :meth:`request_streamed` (the returned ``body`` is empty; ``hold`` is not used for it);
        a stale connection's retry calls it again.

        Raises:
            ConnectFailed: no connection (nothing was sent).
            ResponseTimeout, ResponseTooLarge, MalformedResponse, ConnectionLost: the request was (or may have
                been) sent.
            Exception: whatever ``check_peer`` or ``hold.take`` raises, or ``spill`` or its sink (the connection
                is closed).
            ValueError: a header name or value, the method or the target holds CR or LF.
        """
        data = self._serialise(method, target, headers, body)
        may_retry = retry_stale if retry_stale is not None else method in IDEMPOTENT_METHODS
        if read_timeout is None:
            read_timeout = self.limits.read_timeout
        head = method == "HEAD"
        for attempt in (1, 2):
            conn, reused = await self._acquire()
            try:
                resp = await conn.exchange(data, head=head, hold=hold, what=what, read_timeout=read_timeout,
                                           spill=spill)
            except ConnectionLost:
                conn.close()
                if attempt == 1 and reused and may_retry and not conn.response_began:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            self._release(conn)
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    async def request_streamed(
        self, method: str, target: str, headers: Sequence[tuple[str, str]] = (), body: BodySource | None = None, *,
        length: int | None = None, sink: BodySink, what: str = "response body", read_timeout: float | None = None,
        retry_stale: bool | None = None,
    ) -> ClientResponse:
        """Send one request with a streamed body, read its response's body into ``sink``.

        ``body`` gives the request body's chunks from the first byte each time it is called (``Spool.chunks``);
        it is sent with ``Content-Length: length`` when ``length`` is given, else chunked. The response body
        goes to ``sink`` chunk by chunk (``sink.finish()`` at its end) and the returned response's ``body`` is
        empty; ``max_body_bytes`` bounds it as for :meth:`request`. The read timeout runs from the request
        body's last byte to the response's, and also bounds each wait for the peer to read more of the body.
        A stale connection is retried as by :meth:`request` (the body is called again; the sink has received
        nothing, since no byte of the response had arrived).

        Raises:
            as :meth:`request`; and whatever ``body``'s iteration or ``sink`` raises (the connection is closed);
            ValueError: ``body`` gave more or fewer bytes than ``length``.
        """
        if length is not None and (body is None or length < 0):
            raise ValueError("length is the non-negative length of a request body")
        head = self._serialise(method, target, headers, b"", stream_length=length if body is not None else -1)
        may_retry = retry_stale if retry_stale is not None else method in IDEMPOTENT_METHODS
        if read_timeout is None:
            read_timeout = self.limits.read_timeout
        for attempt in (1, 2):
            conn, reused = await self._acquire()
            try:
                resp = await conn.exchange_streamed(head, body, length, head_method=method == "HEAD", sink=sink,
                                                    what=what, read_timeout=read_timeout)
            except ConnectionLost:
                conn.close()
                if attempt == 1 and reused and may_retry and not conn.response_began:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            self._release(conn)
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _serialise(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes, *,
        stream_length: int | None = -1,
    ) -> bytes:
        """The request's head and ``body``; for a streamed body (``stream_length`` not -1), the head only, with
        ``Content-Length: stream_length``, or ``Transfer-Encoding: chunked`` when it is None."""
        lines = [f"{method} {target} HTTP/1.1\r\n"]
        has_host = False
        for name, value in headers:
            lname = name.lower()
            if lname in FRAMING_HEADERS:
                continue
            has_host = has_host or lname == "host"
            lines.append(f"{name}: {value}\r\n")
        if not has_host:
            lines.append(f"Host: {self._host_header}\r\n")
        if stream_length is None:
            lines.append("Transfer-Encoding: chunked\r\n")
        elif stream_length >= 0:
            lines.append(f"Content-Length: {stream_length}\r\n")
        elif body or method in _BODY_METHODS:
            lines.append(f"Content-Length: {len(body)}\r\n")
        head = "".join(lines)
        if head.count("\n") != len(lines) or head.count("\r") != len(lines):
            raise ValueError("a request header name or value, the method or the target holds CR or LF")
        data = head.encode("utf-8", "surrogateescape") + b"\r\n"
        return data + body if body else data

    async def _acquire(self) -> tuple[_Connection, bool]:
        while True:
            if self.closed:
                raise ConnectFailed(f"the connection pool to {self._host_header} is closed")
            while self._idle:
                conn = self._idle.pop()
                if conn.closed or conn.transport is None or conn.transport.is_closing():
                    conn.close()
                    continue
                await self._check(conn)
                return conn, True
            if self._open < self.limits.max_connections:
                break
            waiter = self.loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if not waiter.cancelled():
                    self._wake_one()  # pass on a slot given to a caller that no longer wants it
                raise
        self._open += 1
        try:
            conn = await self._connect()
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise
        await self._check(conn)
        return conn, False

    async def _check(self, conn: _Connection) -> None:
        if self._check_peer is None:
            return
        try:
            await self._check_peer(conn.peer_cert)
        except BaseException:
            conn.close()  # never reuse a connection to a peer we no longer accept
            raise

    async def _connect(self) -> _Connection:
        host, port = self.address
        where = self._host_header
        timeout = self.limits.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                _, conn = await self.loop.create_connection(lambda: _Connection(self), host, port, ssl=self._ssl)
        except ssl.SSLCertVerificationError as e:
            reason = e.verify_message or str(e)
            raise ConnectFailed(f"TLS certificate of {where} refused: {reason}", certificate_error=reason) from e
        except ssl.SSLError as e:
            raise ConnectFailed(f"TLS handshake with {where} failed: {e.reason or e}") from e
        except TimeoutError as e:
            raise ConnectFailed(f"no connection to {where} within {timeout:g} s") from e
        except OSError as e:
            raise ConnectFailed(f"cannot connect to {where}: {e.strerror or e}") from e
        return conn

    def _release(self, conn: _Connection) -> None:
        if not conn.reusable or self.closed or conn.closed:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            tick = min(1.0, self.limits.idle_timeout / 4)
            self._sweeper = self.loop.call_later(tick, self._sweep, tick)
        self._wake_one()

    def _sweep(self, tick: float) -> None:
        """Close connections idle for longer than ``idle_timeout`` (runs while any connection is idle)."""
        self._sweeper = None
        limit = self.loop.time() - self.limits.idle_timeout
        for conn in [c for c in self._idle if c.idle_since <= limit]:
            conn.close()
        if self._idle:
            self._sweeper = self.loop.call_later(tick, self._sweep, tick)

    def _discard(self, conn: _Connection) -> None:
        """A connection has ended (called once per connection)."""
        if conn.counted:
            conn.counted = False
            self._open -= 1
            if conn in self._idle:
                self._idle.remove(conn)
            self._wake_one()

    def _wake_one(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close the idle connections now, and the others as their exchanges end; refuse new requests."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._idle):
            conn.close()
        self._idle.clear()
        for waiter in self._slot_waiters:
            if not waiter.done():
                waiter.set_result(None)  # they see ``closed`` and raise ConnectFailed
