"""What the proxies report about each answered exchange to the server's metrics (I/O: process metrics).

Called once per exchange at each proxy's single entry point, with the answer that leaves: its status and
``X-Road-Error`` give the outcome and fault type. Labels come only from identifiers this server has checked,
never from raw request headers, so that no caller can grow the number of series: the client only if it is
registered here (client side) or named in our signed answer (server side), the service only if its subsystem
is in the global configuration; otherwise ``""``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from gateway.identifiers import ClientId, ServiceId
from gateway.protocol import rest
from gateway.proxy import http
from gateway.proxy.context import ProxyContext

# An X-Road fault type as we render them; a relayed one that is not (a peer may send anything) counts as OTHER.
_FAULT = re.compile(r"(Client|Server|Signer)(\.[A-Za-z0-9]{1,40}){1,3}")
OTHER_FAULT = "Server.Other"


def client_labels(ctx: ProxyContext, client: ClientId | None, service: ServiceId | None) -> tuple[str, str]:
    """Bounded labels for a client-side exchange (module docstring)."""
    c = str(client) if client is not None and client in ctx.snapshot.clients else ""
    conf = ctx.globalconf.current
    s = str(service) if service is not None and conf is not None and conf.subsystem_exists(service.subsystem) else ""
    return c, s


def exchange_done(
    ctx: ProxyContext, side: str, *, started: float, status: int, headers: Iterable[tuple[str, str]],
    labels: tuple[str, str], request_bytes: int | None, response_bytes: int | None,
) -> None:
    """Count one answered exchange; ``started`` is its ``time.perf_counter()`` at arrival."""
    fault = None
    for name, value in headers:
        if name.lower() == rest.H_ERROR:
            fault = value if _FAULT.fullmatch(value) else OTHER_FAULT
            break
    ctx.metrics.exchange_done(side, client=labels[0], service=labels[1], seconds=time.perf_counter() - started,
                              fault=fault, request_bytes=request_bytes, response_bytes=response_bytes)


def request_size(content_length: int | None, transfer_encoding: str | None) -> int | None:
    """The request body's size as declared: its Content-Length, 0 without a body, None if chunked (unknown
    here; not observed)."""
    if content_length is not None:
        return content_length
    return None if transfer_encoding else 0


def response_size(response: http.Response) -> int | None:
    """The answer's body size: its bytes, or a streamed one's length (None if unknown). A streamed answer is
    counted when it starts to leave, so its exchange's seconds do not include sending its body."""
    return response.length if response.stream is not None else len(response.body)


def server_labels(headers: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """Server side: the client and service our signed answer names (set only once the request verified)."""
    client = service = ""
    for name, value in headers:
        lname = name.lower()
        if lname == rest.H_CLIENT:
            client = value
        elif lname == rest.H_SERVICE:
            service = value
    return client, service


__all__ = [
    "OTHER_FAULT", "client_labels", "exchange_done", "request_size", "response_size", "server_labels",
]
