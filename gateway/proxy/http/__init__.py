"""A lean HTTP/1.1 layer for the two data-path ports and the peer client: asyncio over ``httptools`` (I/O).

- :mod:`~gateway.proxy.http.server`: :class:`HttpServer` calls an async handler with a :class:`Request` (raw
  method, raw target, raw header pairs, the body on demand, whole or streamed) and writes the :class:`Response`
  it returns (whole, or streamed from an async iterable);
- :mod:`~gateway.proxy.http.client`: :class:`ClientPool`, kept-alive connections to one address, the peer's
  certificate checked before any request byte is written; a body sent whole or streamed, a response read whole
  or into a :class:`BodySink` (``gateway.proxy.spool.Spool``);
- :mod:`~gateway.proxy.http.types`: the request/response shapes, the limits and the client's errors.

It knows nothing of X-Road: the proxies keep their rules, and use this in place of aiohttp where it pays
(docs/performance.md section 8).
"""

from gateway.proxy.http.client import IDEMPOTENT_METHODS, ClientPool, PeerCheck, Spill
from gateway.proxy.http.server import Handler, HttpServer, RefusalRenderer, Request
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
    Response,
    ResponseTimeout,
    ResponseTooLarge,
    ServerLimits,
)

__all__ = [
    "FRAMING_HEADERS",
    "IDEMPOTENT_METHODS",
    "BodyHold",
    "BodySink",
    "BodySource",
    "ClientLimits",
    "ClientPool",
    "ClientResponse",
    "ConnectFailed",
    "ConnectionLost",
    "Handler",
    "HttpClientError",
    "HttpServer",
    "MalformedResponse",
    "PeerCheck",
    "RefusalRenderer",
    "Request",
    "Response",
    "ResponseTimeout",
    "ResponseTooLarge",
    "ServerLimits",
    "Spill",
]
