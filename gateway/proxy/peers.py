"""Connections to peer security servers: pooled, kept-alive mutual TLS, checked before use (I/O).

All socket work toward peers happens here. One :class:`aiohttp.ClientSession` per peer server keeps its
connections alive (a new mTLS handshake costs more CPU than a whole exchange, docs/performance.md). Each new
connection is checked right after the TLS handshake and before any request byte is written: the certificate
must be registered for the server we dialled and be good according to OCSP (:mod:`gateway.globalconf.peertrust`).
A pooled connection is checked again each time it is taken from the pool (a dictionary lookup while the
cached answer holds), so that a revocation or a de-registration also ends kept-alive connections within
``ocsp_refresh_seconds``. A certificate that fails the handshake's own checks (untrusted issuer, expired) is
reported as ``SslAuthenticationFailed`` too, not as a network error.

Choosing among several provider servers follows X-Road's "fastest wins": race TCP connects, prefer the first
to answer for a while, and fail over to the next on connection errors.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from gateway.errors import GatewayError, PeerError, SslAuthenticationFailed
from gateway.globalconf.model import SecurityServer
from gateway.identifiers import SecurityServerId

PeerCheck = Callable[[SecurityServerId, bytes | None], Awaitable[None]]


class _CheckingConnector(aiohttp.TCPConnector):
    """A connector that runs ``check`` on the peer's certificate each time a connection is handed out.

    It hooks ``connect``, which aiohttp calls for every request, for new and pooled connections alike, before
    a request byte is written; aiohttp's public ``ssl=Fingerprint`` cannot be combined with a client
    certificate. ``_wrap_create_connection`` turns the handshake's certificate failures into ours.
    """

    def __init__(self, *, server_id: SecurityServerId, check: PeerCheck, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._server_id = server_id
        self._check = check

    async def _wrap_create_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._wrap_create_connection(*args, **kwargs)
        except aiohttp.ClientConnectorCertificateError as e:
            # the chain did not verify against the CAs of the global configuration, or is not valid now
            raise SslAuthenticationFailed(
                f"TLS certificate of security server {self._server_id} refused: {e.certificate_error}",
            ) from e

    async def connect(
        self, req: aiohttp.ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109
    ) -> Connection:  # aiohttp's signature
        conn = await super().connect(req, traces, timeout)
        transport = conn.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        try:
            await self._check(self._server_id, der)
        except BaseException:
            conn.close()  # never reuse a connection to a peer we no longer accept
            raise
        return conn


class PeerPool:
    """Pooled sessions to peer servers, and the choice of which provider server to use."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        check: PeerCheck,
        *,
        connect_timeout: float = 10.0,
        limit_per_peer: int = 100,
        keepalive_seconds: float = 60.0,
        race_cache_seconds: float = 60.0,
    ) -> None:
        self._ssl = ssl_context
        self._check = check
        self._connect_timeout = connect_timeout
        self._limit = limit_per_peer
        self._keepalive = keepalive_seconds
        self._race_cache_seconds = race_cache_seconds
        self._sessions: dict[SecurityServerId, aiohttp.ClientSession] = {}
        self._winners: dict[frozenset[SecurityServerId], tuple[SecurityServerId, float]] = {}

    def session(self, server_id: SecurityServerId) -> aiohttp.ClientSession:
        session = self._sessions.get(server_id)
        if session is None or session.closed:
            connector = _CheckingConnector(
                server_id=server_id, check=self._check, ssl=self._ssl, limit=self._limit,
                keepalive_timeout=self._keepalive, enable_cleanup_closed=False,
            )
            session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
                # Pass-through, not a browser: a Set-Cookie in a response goes back to the client system
                # and is never replayed on other clients' requests (which would also break their signed
                # header parts).
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._sessions[server_id] = session
        return session

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
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


def is_connect_failure(e: BaseException) -> bool:
    """Whether nothing of the request reached the peer, so another server may be tried."""
    if isinstance(e, aiohttp.ClientConnectorError | aiohttp.ClientSSLError | ConnectionRefusedError):
        return True
    return isinstance(e, SslAuthenticationFailed)


def wrap_send_failure(e: BaseException, server_id: SecurityServerId) -> GatewayError:
    if isinstance(e, GatewayError):
        return e
    if isinstance(e, TimeoutError | asyncio.TimeoutError):
        return PeerError(f"security server {server_id} did not answer in time")
    return PeerError(f"cannot exchange with security server {server_id}: {e or type(e).__name__}")
