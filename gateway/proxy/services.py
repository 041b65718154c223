"""Connections to the services behind this security server: one kept-alive pool per origin (I/O).

The provider's side calls a service at its base URL from serverconf (``http://`` or ``https://``, checked by
:func:`gateway.serverconf.store.check_url`) with the lean HTTP/1.1 client (:class:`gateway.proxy.http.ClientPool`),
one pool per origin (scheme, host, port), shared by every service at that origin. What a call does:

- **the target**: the base URL's path (and query, if it has one), a trailing ``/`` dropped, then the path and
  query the caller gives, sent as they are (already encoded); ``Host`` is the base URL's host, with its port
  when that is not the scheme's default;
- **https**: the service's certificate is verified against the system's trust store (OpenSSL's default paths:
  ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set), and its name against the URL's host
  (``ssl.create_default_context()``), as the aiohttp session that made these calls before did; one context for
  every https origin, made at the first https call;
- **timeout**: ``timeout_seconds`` for the whole call, connecting included, to the response's last byte;
- **redirects** are answers like any other, passed back, never followed; bodies pass byte for byte (no
  content coding, nothing added but ``Host`` and the framing);
- **a stale connection** (a kept-alive one the service closed while it was idle, ended before any byte of the
  answer) is retried once on a new connection, but only for the methods RFC 9110 calls idempotent: a service
  has no replay check that would make a repeated ``POST`` harmless;
- **idle**: a connection unused for ``idle_seconds`` is closed; a pool without connections, unused for as long,
  is dropped; :meth:`ServicePools.close` closes them all (at the server's stop).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlsplit

from gateway.proxy import http

_DEFAULT_PORTS = {"http": 80, "https": 443}


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int


class BaseUrl(NamedTuple):
    """A service's base URL as the pools use it."""

    origin: Origin
    prefix: str  # the base URL's path and query, without a trailing "/"
    host_header: str


@lru_cache(maxsize=1024)
def split_base_url(url: str) -> BaseUrl:
    """Split a service's base URL, which serverconf has checked (http or https, a host, no credentials) (pure)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    default = _DEFAULT_PORTS[scheme]
    port = parts.port or default
    named = f"[{host}]" if ":" in host else host
    prefix = url[len(parts.scheme) + 3 + len(parts.netloc):].rstrip("/")
    return BaseUrl(Origin(scheme, host, port), prefix, named if port == default else f"{named}:{port}")


class ServicePools:
    """Kept-alive connections to services, one :class:`~gateway.proxy.http.ClientPool` per origin (see the
    module docstring)."""

    def __init__(
        self, *, max_body_bytes: int, idle_seconds: float = 60.0, max_connections_per_origin: int = 4096,
    ) -> None:
        # The whole call is bounded by the service's own timeout (request()); the pool's connect timeout is only
        # a backstop above serverconf's largest (3600 s).
        self._limits = http.ClientLimits(
            max_body_bytes=max_body_bytes, connect_timeout=3600.0, read_timeout=None,
            max_connections=max_connections_per_origin, idle_timeout=idle_seconds,
        )
        self._idle_seconds = idle_seconds
        self._pools: dict[Origin, http.ClientPool] = {}
        self._used: dict[Origin, float] = {}
        self._pruned = 0.0
        self._tls: ssl.SSLContext | None = None
        self.closed = False

    @property
    def origins(self) -> list[Origin]:
        """The origins a pool is kept for now."""
        return list(self._pools)

    def pool(self, origin: Origin) -> http.ClientPool:
        """The pool for ``origin`` (made on first use)."""
        pool = self._pools.get(origin)
        if pool is None:
            if self.closed:
                raise http.ConnectFailed("the service connections are closed (the server is stopping)")
            context = None
            if origin.scheme == "https":
                if self._tls is None:
                    self._tls = ssl.create_default_context()
                context = self._tls
            pool = http.ClientPool((origin.host, origin.port), ssl=context, limits=self._limits)
            self._pools[origin] = pool
        return pool

    async def _prune(self, now: float) -> None:
        """Drop the pools that have had no connection and no call for ``idle_seconds``."""
        self._pruned = now
        for origin, pool in list(self._pools.items()):
            if pool.open_connections == 0 and now - self._used.get(origin, 0.0) >= self._idle_seconds:
                del self._pools[origin]
                self._used.pop(origin, None)
                await pool.close()

    async def request(
        self, base_url: str, method: str, path_and_query: str, headers: Sequence[tuple[str, str]], body: bytes,
        *, timeout_seconds: float, hold: http.BodyHold | None = None, what: str = "the service's response",
        spill: http.Spill | None = None,
    ) -> http.ClientResponse:
        """Call the service at ``base_url`` + ``path_and_query``; the whole response within ``timeout_seconds``
        (its body written into the sink ``spill`` may give once the head has come, see ``ClientPool.request``).

        Raises:
            TimeoutError: no whole response within ``timeout_seconds`` (connecting included).
            http.ConnectFailed: no connection (nothing was sent).
            http.ResponseTooLarge, http.MalformedResponse, http.ConnectionLost: the request was (or may have
                been) sent.
            Exception: whatever ``hold.take`` raises.
        """
        pool, target, extra = await self._route(base_url, path_and_query)
        async with asyncio.timeout(timeout_seconds):
            return await pool.request(method, target, [*headers, extra], body, hold=hold, what=what, spill=spill)

    async def request_streamed(
        self, base_url: str, method: str, path_and_query: str, headers: Sequence[tuple[str, str]],
        body: http.BodySource, *, length: int, sink: http.BodySink, timeout_seconds: float,
        what: str = "the service's response",
    ) -> http.ClientResponse:
        """As :meth:`request`, with the body ``body`` gives (``length`` bytes, ``Spool.chunks``) and the response's
        body written into ``sink`` (a ``Spool``); ``timeout_seconds`` bounds the whole call, both bodies included.

        Raises:
            as :meth:`request`; and whatever ``sink`` raises.
        """
        pool, target, extra = await self._route(base_url, path_and_query)
        async with asyncio.timeout(timeout_seconds):
            return await pool.request_streamed(method, target, [*headers, extra], body, length=length, sink=sink,
                                               what=what)

    async def _route(self, base_url: str, path_and_query: str) -> tuple[http.ClientPool, str, tuple[str, str]]:
        """The pool, the target and the ``Host`` header of a call (old pools pruned on the way)."""
        base = split_base_url(base_url)
        target = base.prefix + path_and_query
        if not target.startswith("/"):
            target = "/" + target
        now = asyncio.get_running_loop().time()
        if now - self._pruned >= self._idle_seconds:
            await self._prune(now)
        pool = self.pool(base.origin)
        self._used[base.origin] = now
        return pool, target, ("Host", base.host_header)

    async def close(self) -> None:
        """Close every pool: idle connections now, busy ones as their calls end; no new pool after this."""
        self.closed = True
        pools, self._pools = list(self._pools.values()), {}
        self._used.clear()
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)


__all__ = ["BaseUrl", "Origin", "ServicePools", "split_base_url"]
