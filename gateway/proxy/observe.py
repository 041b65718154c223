"""What the proxies report about each answered exchange to the server's metrics (I/O: process metrics).

Called once per exchange at each proxy's single entry point, with the answer that leaves: its status and
``X-Road-Error`` give the outcome and fault type. Labels come only from identifiers this server has checked,
never from raw request headers, so that no caller can grow the number of series: the client only if it is
registered here (client side) or named in our signed answer (server side), the service only if its subsystem
is in the global configuration; otherwise ``""``.

Besides the metrics, each exchange ends in an operational-monitoring record (:mod:`gateway.opmon`, queued
without waiting) and, with ``[server] exchange_log``, one ``exchange`` log line at info level
(docs/operations.md, "Operational monitoring"). What they say is gathered while the exchange runs on an
:class:`Exchange` that :func:`begin` makes current for the exchange's task (a context variable: the HTTP layer
runs each request in a task of its own), so that the steps deep in each proxy note what they learn with one call
(:func:`identified`, :func:`assigned`, :func:`sent`, :func:`received`) rather than pass it back up. Records
and log lines, unlike labels, carry the identifiers as parsed (they are rows and lines, not series).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from gateway.identifiers import ClientId, ServiceId
from gateway.logs import info_line
from gateway.opmon.record import OpRecord, Side
from gateway.protocol import rest
from gateway.proxy import http
from gateway.proxy.context import ProxyContext

log = structlog.get_logger("gateway.proxy.exchange")

# An X-Road fault type as we render them; a relayed one that is not (a peer may send anything) counts as OTHER.
_FAULT = re.compile(r"(Client|Server|Signer)(\.[A-Za-z0-9]{1,40}){1,3}")
OTHER_FAULT = "Server.Other"
_MAX_ID = 255  # characters of a message or request id kept in a record (X-Road's VARCHAR(255))


def client_labels(ctx: ProxyContext, client: ClientId | None, service: ServiceId | None) -> tuple[str, str]:
    """Bounded labels for a client-side exchange (module docstring)."""
    c = str(client) if client is not None and client in ctx.snapshot.clients else ""
    conf = ctx.globalconf.current
    s = str(service) if service is not None and conf is not None and conf.subsystem_exists(service.subsystem) else ""
    return c, s


@dataclass(slots=True)
class Exchange:
    """What one exchange has made known so far (module docstring); perf-counter times, one wall-clock time."""

    side: Side
    method: str
    started: float  # time.perf_counter() at arrival
    arrived: datetime  # ctx.clock() at arrival: the other timestamps are counted from it
    message_id: str | None = None
    request_id: str | None = None
    client: str | None = None
    service: str | None = None
    peer_server: str | None = None
    request_out: float | None = None  # perf_counter() when first sent on (to the peer, or to the service)
    response_in: float | None = None  # perf_counter() when the whole response came back
    recorded: bool = True  # False for what is no exchange (a health probe): counted, neither recorded nor logged


_CURRENT: ContextVar[Exchange | None] = ContextVar("gateway_exchange", default=None)


def begin(ctx: ProxyContext, side: Side, method: str) -> Exchange:
    """Start noting an exchange that has just arrived; current for the calling task from now on."""
    ex = Exchange(side=side, method=method, started=time.perf_counter(), arrived=ctx.clock())
    _CURRENT.set(ex)
    return ex


def identified(*, client: ClientId | None = None, service: ServiceId | None = None, message_id: str | None = None,
               peer_server: object | None = None) -> None:
    """The current exchange's client, service, message id or other side's server, as far as known now."""
    ex = _CURRENT.get()
    if ex is None:
        return
    if client is not None:
        ex.client = str(client)
    if service is not None:
        ex.service = str(service)
    if message_id is not None:
        ex.message_id = message_id[:_MAX_ID]
    if peer_server is not None:
        ex.peer_server = str(peer_server)


def assigned(request_id: str) -> None:
    """The current exchange's ``X-Road-Request-Id``: generated (client side) or verified (server side)."""
    ex = _CURRENT.get()
    if ex is not None:
        ex.request_id = request_id[:_MAX_ID]


def sent(peer_server: object | None = None) -> None:
    """The request goes out now (to the provider's server ``peer_server``, or to the service); the first
    attempt counts."""
    ex = _CURRENT.get()
    if ex is not None:
        if ex.request_out is None:
            ex.request_out = time.perf_counter()
        if peer_server is not None:
            ex.peer_server = str(peer_server)


def received() -> None:
    """The whole response came back."""
    ex = _CURRENT.get()
    if ex is not None:
        ex.response_in = time.perf_counter()


def exchange_done(
    ctx: ProxyContext, ex: Exchange, response: http.Response, *, labels: tuple[str, str],
    request_bytes: int | None,
) -> None:
    """Account for one answered exchange: give an error answer the request id it lacks, count the metrics,
    queue the operational-monitoring record, write the log line."""
    fault = None
    has_request_id = False
    for name, value in response.headers:
        lname = name.lower()
        if lname == rest.H_ERROR:
            fault = value if _FAULT.fullmatch(value) else OTHER_FAULT
        elif lname == rest.H_REQUEST_ID:
            has_request_id = True
    if ex.request_id is not None and not has_request_id:
        # an error answered before (client side) or without (server side) the signed response's headers
        response.headers = [*response.headers, ("X-Road-Request-Id", ex.request_id)]
    ended = time.perf_counter()
    seconds = ended - ex.started
    response_bytes = response_size(response)
    ctx.metrics.exchange_done(ex.side, client=labels[0], service=labels[1], seconds=seconds, fault=fault,
                              request_bytes=request_bytes, response_bytes=response_bytes)
    if not ex.recorded:
        return
    if ctx.opmon is not None:
        arrived, started = ex.arrived, ex.started
        ctx.opmon.offer(OpRecord(
            side=ex.side, origin=ctx.origin, message_id=ex.message_id, request_id=ex.request_id,
            client=ex.client, service=ex.service, method=ex.method, request_in=arrived,
            request_out=None if ex.request_out is None else arrived + timedelta(seconds=ex.request_out - started),
            response_in=None if ex.response_in is None else arrived + timedelta(seconds=ex.response_in - started),
            response_out=arrived + timedelta(seconds=seconds), request_bytes=request_bytes,
            response_bytes=response_bytes, status=response.status, fault=fault, peer_server=ex.peer_server,
        ))
    if ctx.exchange_log:
        # written without structlog's per-call machinery when the process logs JSON (gateway.logs.info_line)
        info_line(log, "exchange", {
            "side": ex.side, "request_id": ex.request_id, "message_id": ex.message_id, "client": ex.client,
            "service": ex.service, "status": response.status, "fault": fault, "duration_ms": round(seconds * 1000, 3),
        })


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
    "OTHER_FAULT", "Exchange", "assigned", "begin", "client_labels", "exchange_done", "identified", "received",
    "request_size", "response_size", "sent", "server_labels",
]
