"""Connections to peer security servers: pooled, kept-alive mutual TLS, checked before use (I/O).

All socket work toward peers happens here. One :class:`~gateway.proxy.http.ClientPool` (the lean HTTP/1.1
layer, :mod:`gateway.proxy.http`) per peer server keeps its connections alive (a new mTLS handshake costs more
CPU than a whole exchange, docs/performance.md). Each new connection is checked right after the TLS handshake
and before any request byte is written: the certificate must be registered for the server we dialled and be
good according to OCSP (:mod:`gateway.globalconf.peertrust`). A pooled connection is checked again each time it
is taken from the pool (a dictionary lookup while the cached answer holds), so that a revocation or a
de-registration also ends kept-alive connections within ``ocsp_refresh_seconds``. A certificate that fails the
handshake's own checks (untrusted issuer, expired) is reported as ``SslAuthenticationFailed`` too, not as a
network error.

A request whose pooled connection turns out to have been closed by the peer while idle (it ends before any
byte of the response arrived) is sent once more on a new connection (``retry_stale``). That is safe on this
hop although the methods need not be idempotent: the provider refuses a second request with the same signed
``X-Road-Request-Id`` as a replay before it reaches the service, so a request that did reach the provider is
never served twice; at worst the caller gets that refusal instead of a lost-connection error.

Choosing among several provider servers follows X-Road's "fastest wins": race TCP connects, prefer the first
to answer for a while, and fail over to the next on connection errors.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence

from gateway.errors import GatewayError, PeerError, ResponseTooLarge, SslAuthenticationFailed
from gateway.globalconf.model import SecurityServer
from gateway.identifiers import SecurityServerId
from gateway.proxy import http
from gateway.proxy.common import BodyAccount
from gateway.proxy.spool import Spool

PeerCheck = Callable[[SecurityServerId, bytes | None], Awaitable[None]]


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` of the global configuration as a socket address.

    Raises:
        PeerError: the address has no numeric port.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise PeerError(f"security server address {address[:100]!r} is not host:port")
    return host.strip("[]"), int(port)


class PeerPool:
    """Pooled connections to peer servers, and the choice of which provider server to use."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        check: PeerCheck,
        *,
        connect_timeout: float = 10.0,
        limit_per_peer: int = 100,
        keepalive_seconds: float = 60.0,
        race_cache_seconds: float = 60.0,
        max_body_bytes: int = 10 * 2**20,
    ) -> None:
        self._ssl = ssl_context
        self._check = check
        self._connect_timeout = connect_timeout
        self._race_cache_seconds = race_cache_seconds
        self._max_body_bytes = max_body_bytes
        self._limits = http.ClientLimits(
            max_body_bytes=max_body_bytes, connect_timeout=connect_timeout, max_connections=limit_per_peer,
            idle_timeout=keepalive_seconds, read_timeout=None,
        )
        self._pools: dict[SecurityServerId, tuple[str, http.ClientPool]] = {}
        self._winners: dict[frozenset[SecurityServerId], tuple[SecurityServerId, float]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.on_wait: Callable[[float], None] | None = None  # seconds of each answered request (a metric)

    def pool(self, server: SecurityServer) -> http.ClientPool:
        """The pool of connections to ``server`` (a new one when its address changed in the configuration)."""
        entry = self._pools.get(server.id)
        if entry is not None and entry[0] == server.address and not entry[1].closed:
            return entry[1]
        if entry is not None:
            # its idle connections close now, its busy ones as their exchanges end
            task = asyncio.get_running_loop().create_task(entry[1].close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        server_id = server.id
        check = self._check

        async def check_peer(der: bytes | None) -> None:
            await check(server_id, der)

        pool = http.ClientPool(split_address(server.address), ssl=self._ssl, check_peer=check_peer,
                               limits=self._limits)
        self._pools[server_id] = (server.address, pool)
        return pool

    async def request(
        self, server: SecurityServer, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes,
        *, account: BodyAccount, spill: http.Spill | None = None,
    ) -> http.ClientResponse:
        """Send one request to ``server`` and read its whole response, the body held on ``account`` (or, when
        ``spill`` gives a sink once the head has come, written there as it arrives).

        Raises:
            SslAuthenticationFailed: the peer's certificate was refused by the handshake or by the check.
            ResponseTooLarge: the response body is larger than ``max_body_bytes``.
            Overloaded: from ``account`` (:class:`~gateway.proxy.common.BodyBudget`).
            http.HttpClientError: any other failure of the connection (:func:`is_connect_failure` tells
                whether nothing was sent); :func:`wrap_send_failure` names it.
        """
        return await self._timed(server, self.pool(server).request(
            method, target, headers, body, hold=account, what="the provider's response", retry_stale=True,
            spill=spill,
        ))

    async def request_streamed(
        self, server: SecurityServer, method: str, target: str, headers: Sequence[tuple[str, str]],
        body: http.BodySource, *, length: int, sink: Spool,
    ) -> http.ClientResponse:
        """Send one request to ``server`` with the body ``body`` gives (``length`` bytes, ``Spool.chunks``) and
        read its response's body into ``sink`` (a :class:`~gateway.proxy.spool.Spool`, which holds it on the
        exchange's account); the returned response's ``body`` is empty.

        Raises:
            as :meth:`request`; and whatever ``sink`` raises (``PayloadTooLarge`` past its ``max_bytes``,
            ``Overloaded`` from its account, ``OSError`` from its file).
        """
        return await self._timed(server, self.pool(server).request_streamed(
            method, target, headers, body, length=length, sink=sink, what="the provider's response",
            retry_stale=True,
        ))

    async def _timed(
        self, server: SecurityServer, call: Awaitable[http.ClientResponse],
    ) -> http.ClientResponse:
        """Await ``call`` (one request to ``server``), observing its wait and naming its failures (the errors of
        :meth:`request`)."""
        started = time.perf_counter()
        try:
            response = await call
            if self.on_wait is not None:
                self.on_wait(time.perf_counter() - started)
            return response
        except http.ConnectFailed as e:
            if e.certificate_error is not None:
                # the chain did not verify against the CAs of the global configuration, or is not valid now
                raise SslAuthenticationFailed(
                    f"TLS certificate of security server {server.id} refused: {e.certificate_error}",
                ) from e
            raise
        except http.ResponseTooLarge as e:
            raise ResponseTooLarge(
                f"the provider's response is larger than the maximum of {e.limit} bytes",
            ) from e

    async def order(self, servers: Sequence[SecurityServer]) -> list[SecurityServer]:
        """The servers in the order to try them: the fastest to accept a TCP connection first.

        The winner is remembered for ``race_cache_seconds`` so that the race is not run per request.
        """
        if len(servers) <= 1:
            return list(servers)
        key = frozenset(s.id for s in servers)
        cached = self._winners.get(key)
        now = time.monotonic()
        if cached is None or now - cached[1] > self._race_cache_seconds:
            winner = await self._race(servers)
            cached = (winner, now) if winner is not None else None
            if cached is not None:
                self._winners[key] = cached
        if cached is None:
            return list(servers)
        return sorted(servers, key=lambda s: s.id != cached[0])

    async def _race(self, servers: Sequence[SecurityServer]) -> SecurityServerId | None:
        async def connect(server: SecurityServer) -> SecurityServerId:
            host, _, port = server.address.rpartition(":")
            _reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            writer.close()
            return server.id

        tasks = [asyncio.create_task(connect(s)) for s in servers]
        try:
            for next_done in asyncio.as_completed(tasks, timeout=self._connect_timeout):
                try:
                    return await next_done
                except OSError:
                    continue
        except TimeoutError:
            return None
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return None

    def forget_winner(self, server_id: SecurityServerId) -> None:
        for key, (winner, _) in list(self._winners.items()):
            if winner == server_id:
                del self._winners[key]

    async def close(self) -> None:
        pools, self._pools = [p for _, p in self._pools.values()], {}
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)


def is_connect_failure(e: BaseException) -> bool:
    """Whether nothing of the request reached the peer, so another server may be tried."""
    if isinstance(e, http.ConnectFailed | ConnectionRefusedError):
        return True
    return isinstance(e, SslAuthenticationFailed)


def wrap_send_failure(e: BaseException, server_id: SecurityServerId) -> GatewayError:
    if isinstance(e, GatewayError):
        return e
    if isinstance(e, TimeoutError):
        return PeerError(f"security server {server_id} did not answer in time")
    return PeerError(f"cannot exchange with security server {server_id}: {e or type(e).__name__}")
