"""What the lean HTTP/1.1 layer hands to a handler and takes back, its limits and its client errors (pure).

The server gives a handler a :class:`Request` (raw method, raw target, raw header pairs in the order and with the
names as received, the body on demand) and takes a :class:`Response` (status, reason, header pairs, body bytes).
The client pool returns a :class:`ClientResponse` of the same shape. Framing (``Content-Length``,
``Transfer-Encoding``, ``Connection``, ``Keep-Alive``) belongs to the layer: it is parsed and written here,
never passed through (:data:`FRAMING_HEADERS`).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# Lower-case names of the headers the layer itself writes; a handler's or caller's own are dropped.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class BodySink(Protocol):
    """Where the client pool writes a response body as it arrives (``gateway.proxy.spool.Spool`` is one):
    ``write`` is awaited for each chunk (the pool reads on only as it returns), ``finish`` once at the end."""

    async def write(self, data: bytes) -> None: ...

    async def finish(self) -> None: ...


BodySource = Callable[[], AsyncIterable[bytes]]
"""A request body to stream: called once per attempt, it gives the body's chunks from the first byte
(``Spool.chunks`` is one; a body that cannot be read twice is never sent twice)."""


class BodyHold(Protocol):
    """Where bytes of a body being read are held (``gateway.proxy.common.BodyAccount`` is one); ``take`` raises
    to refuse more, and the read fails with that error."""

    def take(self, size: int, what: str) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerLimits:
    """Bounds of the server (every one answered with a precise status when crossed)."""

    max_target_bytes: int = 8190  # bytes of the request target; aiohttp's max_line_size, so targets passing today pass
    max_header_bytes: int = 64 * 1024  # bytes of all header names and values of one request (431 past it)
    max_headers: int = 128  # header lines per request (431 past it); aiohttp's default
    max_body_bytes: int = 10 * 2**20  # bytes of one request body (413 past it); X-Road's default
    header_timeout: float = 15.0  # seconds from a connection's opening (or a request's first byte) to its header end
    body_timeout: float = 60.0  # seconds without a byte while a request body is being read
    keepalive_timeout: float = 75.0  # seconds a kept-alive connection may stay idle between requests
    max_connections: int = 4096  # open connections; one more is answered 503 and closed
    write_buffer_high: int = 256 * 1024  # bytes queued on a transport before reading pauses (back-pressure)
    # bytes of a request body received but not yet taken by the handler before reading pauses, while the handler
    # streams the body (Request.stream) or has not yet asked for it (a whole-body read resumes it)
    stream_buffer_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        for name in ("max_target_bytes", "max_header_bytes", "max_headers", "max_body_bytes", "max_connections",
                     "write_buffer_high", "stream_buffer_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("header_timeout", "body_timeout", "keepalive_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientLimits:
    """Bounds of one client pool."""

    max_body_bytes: int = 10 * 2**20  # bytes of one response body; X-Road's default
    max_header_bytes: int = 64 * 1024  # bytes of all header names and values of one response
    max_headers: int = 128  # header lines per response
    connect_timeout: float = 10.0  # seconds for TCP connect and TLS handshake together
    read_timeout: float | None = None  # seconds from the request's last byte to the response's; None: no limit
    max_connections: int = 100  # open connections to the address; more requests wait for one
    idle_timeout: float = 60.0  # seconds an idle pooled connection is kept

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_header_bytes", "max_headers", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("connect_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.read_timeout is not None and not self.read_timeout > 0:
            raise ValueError("read_timeout must be a positive number of seconds or None")


@dataclass(slots=True, kw_only=True)
class Response:
    """What a handler answers. ``headers`` go out in order, as given (framing headers excepted); the layer adds
    ``Content-Length`` (not for 1xx, 204, 304) and ``Date``, and ``Connection: close`` when the connection ends.
    A response to ``HEAD`` carries the length of ``body`` but not the body.

    A streamed response gives ``stream`` (and leaves ``body`` empty): its chunks are written as they come, with
    back-pressure, framed by ``Content-Length: length`` when ``length`` is given (the stream must then give
    exactly that many bytes, or the connection is aborted), else chunked (to an HTTP/1.0 client: delimited by
    the connection's end). The layer closes the stream (``aclose``) when it is done with it, also when it sends
    none of it (``HEAD``, 204, 304), so that a generator's ``finally`` can release what it reads from."""

    status: int
    reason: str | None = None
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    stream: AsyncIterable[bytes] | None = None
    length: int | None = None  # bytes of ``stream``, when known


@dataclass(slots=True, kw_only=True)  # not frozen: a frozen dataclass's __init__ costs a few µs per response
class ClientResponse:
    """A whole response read by the client pool. ``raw_headers`` are the pairs as received, bytes."""

    status: int
    reason: str
    http_version: str
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""  # empty when the body went to a sink (ClientPool.request_streamed)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), decoded as latin-1, or None."""
        key = name.lower().encode("latin-1")
        for n, v in self.raw_headers:
            if n.lower() == key:
                return v.decode("latin-1")
        return None


# ---- client errors: what happened, and whether the request may have reached the peer -------------------------


class HttpClientError(Exception):
    """Base of the client pool's errors. ``sent`` tells whether any request byte may have reached the peer."""

    sent = True


class ConnectFailed(HttpClientError):
    """No connection: TCP refused or unreachable, connect timeout, TLS handshake refused, or the ``check_peer``
    hook refused the peer. Nothing of the request was sent. ``certificate_error`` is OpenSSL's reason when the
    handshake refused the peer's certificate (untrusted issuer, expired), else None."""

    sent = False

    def __init__(self, message: str, *, certificate_error: str | None = None) -> None:
        super().__init__(message)
        self.certificate_error = certificate_error


class ResponseTimeout(HttpClientError, TimeoutError):
    """The whole response did not arrive within the read timeout; the connection is closed."""


class ResponseTooLarge(HttpClientError):
    """The response body is larger than the limit; the connection is closed without reading further."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class MalformedResponse(HttpClientError):
    """The peer's bytes are not an HTTP/1.x response (or its header block is too large)."""


class ConnectionLost(HttpClientError):
    """The connection ended before the whole response arrived."""
