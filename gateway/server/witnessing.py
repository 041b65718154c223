"""The pusher's transport: ``add-checkpoint`` requests to witnesses over mutual TLS (I/O).

docs/witness.md section 4. One kept-alive :class:`~gateway.proxy.http.ClientPool` per witness URL, with this
server's TLS client context (its authentication certificate) and the peer check of the proxies
(:meth:`gateway.proxy.context.ProxyContext.check_peer`): right after the handshake, before any byte of the
request is written, the witness's TLS certificate must be a registered authentication certificate of the
policy's ``server`` for that witness, and good according to OCSP. A policy URL is ``https://host:port/prefix``;
the request goes to ``/prefix/add-checkpoint`` with the log's signing certificate in
:data:`~gateway.witness.pusher.LOG_CERT_HEADER`.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from gateway.errors import GatewayError, PeerError
from gateway.globalconf.model import Witness
from gateway.identifiers import SecurityServerId
from gateway.proxy import http
from gateway.witness.pusher import LOG_CERT_HEADER, MAX_ANSWER_BYTES, WitnessAnswer

PeerCheck = Callable[[SecurityServerId, bytes | None], Awaitable[None]]
MAX_CONNECTIONS = 2  # per witness: one push at a time per log, a few logs


def witness_address(url: str) -> tuple[tuple[str, int], str]:
    """``(host, port)`` and the request target of ``<url>/add-checkpoint``.

    Raises:
        PeerError: not an https URL with a host and a port (the global configuration's validation makes this
            unreachable for a published policy).
    """
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise PeerError(f"witness URL {url[:200]!r} is not https://host:port/prefix")
    try:
        port = parts.port or 443
    except ValueError as e:
        raise PeerError(f"witness URL {url[:200]!r} has a bad port") from e
    return (parts.hostname, port), f"{parts.path.rstrip('/')}/add-checkpoint"


class PeerWitnessTransport:
    """:class:`~gateway.witness.pusher.WitnessTransport` over the server's mutual TLS (module docstring)."""

    def __init__(self, ssl_context: ssl.SSLContext, check: PeerCheck) -> None:
        self._ssl = ssl_context
        self._check = check
        self._pools: dict[tuple[str, SecurityServerId], http.ClientPool] = {}

    def _pool(self, witness: Witness, timeout_seconds: float) -> tuple[http.ClientPool, str]:
        address, target = witness_address(witness.url)
        key = (witness.url, witness.server)
        pool = self._pools.get(key)
        if pool is None or pool.closed:
            server, check = witness.server, self._check

            async def check_peer(der: bytes | None) -> None:
                await check(server, der)

            limits = http.ClientLimits(max_body_bytes=MAX_ANSWER_BYTES, connect_timeout=timeout_seconds,
                                       read_timeout=timeout_seconds, max_connections=MAX_CONNECTIONS)
            pool = self._pools[key] = http.ClientPool(address, ssl=self._ssl, check_peer=check_peer, limits=limits)
        return pool, target

    async def add_checkpoint(self, witness: Witness, body: bytes, *, log_certificate: bytes,
                             timeout_seconds: float) -> WitnessAnswer:
        pool, target = self._pool(witness, timeout_seconds)
        headers = [(LOG_CERT_HEADER, base64.b64encode(log_certificate).decode("ascii"))]
        try:
            response = await pool.request("POST", target, headers, body, what="the witness's answer",
                                          read_timeout=timeout_seconds, retry_stale=True)
        except GatewayError as e:  # the peer check refused the witness's certificate
            raise PeerError(f"witness {witness.name} at {witness.url}: {e.message}") from e
        except http.ConnectFailed as e:
            why = e.certificate_error or str(e)
            raise PeerError(f"cannot reach witness {witness.name} at {witness.url}: {why}") from e
        except (http.HttpClientError, OSError) as e:
            raise PeerError(f"witness {witness.name} at {witness.url}: {e or type(e).__name__}") from e
        return WitnessAnswer(status=response.status, content_type=response.header("Content-Type"),
                             body=response.body)

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)


__all__ = ["PeerWitnessTransport", "witness_address"]
