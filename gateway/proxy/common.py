"""Pieces both proxies use: the one error middleware, bounded body reading, header decoding (I/O)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway import rest
from gateway.errors import GatewayError, RequestError

log = structlog.get_logger("gateway.proxy")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's server would decode a request body sent with Content-Encoding (gzip, deflate, br) while the header
# still goes on: the service would get plain bytes labelled gzip, and the next server would try to decode them
# again. Bodies pass through byte for byte (the signed Content-Digest is over the bytes as sent), so the proxies'
# applications run with these handler arguments.
RAW_BODIES: dict[str, object] = {"auto_decompress": False}


def error_response(err: GatewayError, request: web.Request, *, side: str) -> web.Response:
    """Render ``err`` as X-Road does, with a ``detail`` id that is also in our operational log."""
    detail = str(uuid.uuid4())
    status, headers, body = rest.render_error(err, accept=request.headers.get("Accept"), detail=detail)
    log.warning(
        "request refused", side=side, detail=detail, type=err.xroad_type, error=err.message,
        method=request.method, path=request.raw_path[:200], peer=request.remote,
    )
    return web.Response(status=status, headers=headers, body=body)


def error_middleware(side: str) -> Middleware:
    """The one middleware that turns our errors (and bugs) into X-Road error responses."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as e:
            return error_response(e, request, side=side)
        except web.HTTPException:
            raise
        except Exception as e:
            detail = str(uuid.uuid4())
            log.exception("internal error", side=side, detail=detail)
            err = GatewayError(f"internal error ({type(e).__name__})", code=f"{side}.InternalError")
            status, headers, body = rest.render_error(err, accept=request.headers.get("Accept"), detail=detail)
            return web.Response(status=status, headers=headers, body=body)

    return middleware


async def read_body(request: web.Request, limit: int, *, what: str = "request body") -> bytes:
    """Read the whole body, refusing more than ``limit`` bytes without reading past it.

    Raises:
        RequestError: HTTP 413 ``Client.BadRequest`` naming the limit.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise RequestError(
            f"{what} of {declared} bytes is larger than the maximum of {limit} bytes", status=413,
        )
    chunks = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise RequestError(f"{what} is larger than the maximum of {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def header_pairs(raw_headers: tuple[tuple[bytes, bytes], ...]) -> list[tuple[str, str]]:
    """Headers exactly as received: names and values as bytes decoded losslessly."""
    return [
        (n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for n, v in raw_headers
    ]


def split_target(raw_path: str) -> tuple[str, str | None]:
    path, sep, query = raw_path.partition("?")
    return path, (query if sep else None)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
