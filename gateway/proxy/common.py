"""Pieces both proxies use: error rendering, the body budget, header decoding (I/O)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Iterable
from pathlib import Path

import structlog

from gateway.errors import GatewayError, Overloaded, PayloadTooLarge, RequestError, Side, UriTooLong
from gateway.protocol import rest
from gateway.proxy import http
from gateway.proxy.spool import MEMORY_LIMIT as SPOOL_MEMORY_LIMIT
from gateway.proxy.spool import Spool

log = structlog.get_logger("gateway.proxy")

# The start of an X-Road REST request's target (``/r1/...``): both data-path ports route on it.
REST_PREFIX = re.compile(r"/r[0-9]+/")


def lean_error_response(
    e: Exception, *, side: Side, method: str, raw_path: str, remote: str | None, accept: str | None,
    request_id: str | None = None,
) -> http.Response:
    """The one place where a data-path port's handler (on the lean HTTP layer, :mod:`gateway.proxy.http`)
    turns what it raised into a response: our errors rendered as X-Road does, with a ``detail`` id that is also
    in our operational log (``side`` named on them first: a side named earlier, e.g. by the message log for its
    record, stays), anything else as an internal error. The log line names ``request_id``, the exchange's
    ``X-Road-Request-Id`` if one was assigned (the handler's :func:`gateway.proxy.observe.exchange_done` puts it
    on the answer)."""
    detail = str(uuid.uuid4())
    if isinstance(e, GatewayError):
        err = e.at_side(side)
        log.warning(
            "request refused", side=f"Server.{side}", detail=detail, type=err.xroad_type, error=err.message,
            method=method, path=raw_path[:200], peer=remote, request_id=request_id,
        )
    else:
        log.exception("internal error", side=f"Server.{side}", detail=detail, request_id=request_id, exc_info=e)
        err = GatewayError(f"internal error ({type(e).__name__})").at_side(side)
    status, headers, body = rest.render_error(err, accept=accept, detail=detail)
    return http.Response(status=status, headers=headers, body=body)


# What the HTTP layer refuses before a handler runs, by status, as the X-Road fault it is
# (docs/protocol.md section 1.5). The layer's status stays; anything else is an internal error.
_REFUSALS: dict[int, type[GatewayError]] = {
    400: RequestError,  # malformed request (llhttp)
    408: RequestError,  # header block not complete within header_timeout
    413: PayloadTooLarge,  # body over max_body_bytes
    414: UriTooLong,  # request target over max_target_bytes
    431: RequestError,  # too many header lines, or too many bytes of them
    503: Overloaded,  # more connections than max_connections, or the server is closing
}


def refusal_renderer(side: Side) -> http.RefusalRenderer:
    """The data-path ports' renderer for what the HTTP layer answers by itself (:class:`http.HttpServer`'s
    ``render_refusal``): X-Road's error form (JSON, ``X-Road-Error``) with the layer's status and message."""

    def render(status: int, message: str) -> http.Response:
        err = _REFUSALS.get(status, GatewayError)(message).at_side(side)
        detail = str(uuid.uuid4())
        log.warning("request refused by the HTTP layer", side=f"Server.{side}", detail=detail, status=status,
                    type=err.xroad_type, error=message)
        _, headers, body = rest.render_error(err, accept=None, detail=detail)
        return http.Response(status=status, headers=headers, body=body)

    return render


class BodyBudget:
    """The bytes of message bodies one security server holds in memory at a time, over all its exchanges
    (``[server] max_inflight_body_bytes``).

    Bodies are held whole: the signature's ``Content-Digest`` and the message log need every byte before
    the exchange may go on. ``max_body_bytes`` bounds one body; this bounds their sum, so that many large
    requests at once cannot exhaust memory. Each exchange takes from the budget through its own
    :class:`BodyAccount` as its bodies arrive (the declared ``Content-Length`` at once, a chunked body chunk by
    chunk) and gives everything back when it ends. Taking never waits: an exchange that waited while holding
    part of the budget could deadlock with others doing the same. What cannot be taken fails the exchange
    with :class:`~gateway.errors.Overloaded` (``Server.<side>.Overloaded`` as the proxy answers) before more of
    its body is read.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the body budget must be at least 1 byte")
        self.limit = limit
        self.used = 0

    def account(self) -> BodyAccount:
        """An account for one exchange."""
        return BodyAccount(self)


class BodyAccount:
    """What one exchange holds of a :class:`BodyBudget`; :meth:`close` gives it all back (idempotent)."""

    __slots__ = ("_budget", "held")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.held = 0

    def take(self, size: int, what: str) -> None:
        """Hold ``size`` more bytes.

        Raises:
            Overloaded: (HTTP 500) the bodies of the exchanges in progress already fill the budget.
        """
        budget = self._budget
        if budget.used + size > budget.limit:
            raise Overloaded(
                f"{what} cannot be held now: the bodies of the exchanges in progress on this security server "
                f"already fill {budget.used} of its {budget.limit} bytes (max_inflight_body_bytes); retry later",
            )
        budget.used += size
        self.held += size

    def close(self) -> None:
        self._budget.used -= self.held
        self.held = 0

    def __enter__(self) -> BodyAccount:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def header_pairs(raw_headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Headers exactly as received: names and values as bytes decoded losslessly."""
    return [
        (n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for n, v in raw_headers
    ]


def spools_body(request: http.Request) -> bool:
    """Whether a proxy spools a request's body (:class:`~gateway.proxy.spool.Spool`, and the answer's with it)
    rather than reading it whole: it is chunked, or declared larger than the spool's memory threshold
    (docs/performance.md section 9)."""
    declared = request.content_length
    if declared is None:
        return request.header("Transfer-Encoding") is not None
    return declared > SPOOL_MEMORY_LIMIT


class SpillToSpool:
    """A whole-body call's :data:`http.Spill`: a response body that is chunked or declared larger than the
    spool's memory threshold goes into a new :class:`~gateway.proxy.spool.Spool` (kept in :attr:`spool`, which
    the caller closes), a smaller one is read whole."""

    __slots__ = ("directory", "hold", "max_bytes", "spool", "what")

    def __init__(self, directory: Path | None, *, max_bytes: int, what: str, hold: BodyAccount) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.what = what
        self.hold = hold
        self.spool: Spool | None = None

    def __call__(self, declared: int | None) -> Spool | None:
        if declared is not None and declared <= SPOOL_MEMORY_LIMIT:
            return None
        if self.spool is not None:
            self.spool.close()  # a stale connection's retry: the first spool received nothing
        self.spool = Spool(directory=self.directory, max_bytes=self.max_bytes, what=self.what, hold=self.hold)
        return self.spool

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


async def unspooled(spool: Spool | None) -> tuple[Spool | None, bytes | None]:
    """A finished response spool that stayed in memory (at most the threshold: a chunked small body) as its
    bytes, the spool closed: ``(None, body)``; a spilled one as it is: ``(spool, None)``."""
    if spool is None or spool.spilled:
        return spool, None
    body = await spool.read_all()
    spool.close()
    return None, body


def split_target(raw_path: str) -> tuple[str, str | None]:
    path, sep, query = raw_path.partition("?")
    return path, (query if sep else None)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# A body at least this large is hashed in a worker thread, not on the event loop: SHA-256 and SHA-512 of
# 128 KiB take about half a millisecond here, and hashlib releases the GIL on large inputs.
OFF_LOOP_HASH_BYTES = 128 * 1024  # bytes


def _both(body: bytes) -> tuple[bytes, bytes | None]:
    return hashlib.sha256(body).digest(), (hashlib.sha512(body).digest() if body else None)


async def body_hashes(body: bytes) -> tuple[bytes, bytes | None]:
    """SHA-256 of ``body`` (its ``Content-Digest``) and SHA-512 (the request hash's, PR-REST 4.3; None for an
    empty body); off the event loop for a body of :data:`OFF_LOOP_HASH_BYTES` or more."""
    if len(body) < OFF_LOOP_HASH_BYTES:
        return _both(body)
    return await asyncio.to_thread(_both, body)


async def body_sha256(body: bytes) -> bytes:
    """SHA-256 of ``body``; off the event loop for a body of :data:`OFF_LOOP_HASH_BYTES` or more."""
    if len(body) < OFF_LOOP_HASH_BYTES:
        return hashlib.sha256(body).digest()
    return await asyncio.to_thread(sha256, body)
