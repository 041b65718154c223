"""HTTP endpoints of the development PKI: the OCSP responder and the TSA (I/O shell, aiohttp).

Two applications on two ports (as a real deployment would have two services):

* OCSP (RFC 6960 Appendix A): ``POST /`` with ``Content-Type: application/ocsp-request``, and
  ``GET /{base64 of the DER request, URL-encoded}``; answers ``application/ocsp-response``.
* TSA (RFC 3161 section 3.4): ``POST /`` with ``Content-Type: application/timestamp-query``; answers
  ``application/timestamp-reply``.

A body above :data:`MAX_REQUEST_BYTES` gets 413, a POST with another content type 415. Request bytes go
to the pure cores (:mod:`gateway.dev.pki.ocsp_responder`, :mod:`gateway.dev.pki.tsa`); this shell only reads the
clock, refreshes the CA's index (so that ``gateway pki revoke`` in another process takes effect at once)
and writes the answer. An index that cannot be read is answered ``internalError``, never stale statuses.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote

import structlog
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from gateway.dev.pki.ca import DevCA
from gateway.dev.pki.ocsp_responder import respond as ocsp_respond
from gateway.dev.pki.tsa import respond as tsa_respond
from gateway.errors import PkiError

MAX_REQUEST_BYTES = 64 * 1024  # bytes; an OCSP request or timestamp query is a few hundred bytes
OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"
TSA_QUERY_TYPE = "application/timestamp-query"
TSA_REPLY_TYPE = "application/timestamp-reply"

_log = structlog.get_logger(__name__)
Clock = Callable[[], datetime]
CA_KEY = web.AppKey("ca", DevCA)
CLOCK_KEY: web.AppKey[Clock] = web.AppKey("clock")
OCSP_VALIDITY_KEY = web.AppKey("ocsp_validity_seconds", int)


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def _read_body(request: web.Request, content_type: str) -> bytes:
    if request.content_type != content_type:
        raise web.HTTPUnsupportedMediaType(text=f"Content-Type must be {content_type}\n")
    if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_REQUEST_BYTES, actual_size=request.content_length)
    body = await request.content.read(MAX_REQUEST_BYTES + 1)
    if len(body) > MAX_REQUEST_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_REQUEST_BYTES, actual_size=len(body))
    return body


def _ocsp_answer(request: web.Request, der: bytes) -> web.Response:
    app = request.app
    ca = app[CA_KEY]
    try:
        ca.refresh()
    except PkiError as e:
        # the index is unreadable (half-edited by hand?): answer internalError rather than stale statuses
        _log.error("ocsp_index_unreadable", error=e.message)
        failed = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR)
        body = failed.public_bytes(serialization.Encoding.DER)
        return web.Response(body=body, content_type=OCSP_RESPONSE_TYPE)
    answer = ocsp_respond(der, ca.ocsp_state(app[OCSP_VALIDITY_KEY]), app[CLOCK_KEY]())
    return web.Response(body=answer, content_type=OCSP_RESPONSE_TYPE)


async def _ocsp_post(request: web.Request) -> web.Response:
    return _ocsp_answer(request, await _read_body(request, OCSP_REQUEST_TYPE))


async def _ocsp_get(request: web.Request) -> web.Response:
    raw = request.match_info["b64"]
    if len(raw) > MAX_REQUEST_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_REQUEST_BYTES, actual_size=len(raw))
    try:
        der = base64.b64decode(unquote(raw), validate=True)
    except (binascii.Error, ValueError):
        der = b""  # answered malformedRequest by the core, as RFC 6960 asks
    return _ocsp_answer(request, der)


async def _tsa_post(request: web.Request) -> web.Response:
    body = await _read_body(request, TSA_QUERY_TYPE)
    ca = request.app[CA_KEY]
    answer = tsa_respond(
        body, tsa_key=ca.tsa_key, tsa_cert=ca.tsa_cert, chain=(), now=request.app[CLOCK_KEY](),
        serial=secrets.randbits(127) | 1,
    )
    return web.Response(body=answer, content_type=TSA_REPLY_TYPE)


def _app(ca: DevCA, clock: Clock, ocsp_validity_seconds: int) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[CA_KEY] = ca
    app[CLOCK_KEY] = clock
    app[OCSP_VALIDITY_KEY] = ocsp_validity_seconds
    return app


def make_ocsp_app(ca: DevCA, *, clock: Clock = _utcnow, ocsp_validity_seconds: int = 3600) -> web.Application:
    """The OCSP responder application."""
    app = _app(ca, clock, ocsp_validity_seconds)
    app.router.add_post("/", _ocsp_post)
    app.router.add_get("/{b64:.+}", _ocsp_get)
    return app


def make_tsa_app(ca: DevCA, *, clock: Clock = _utcnow) -> web.Application:
    """The timestamping authority application."""
    app = _app(ca, clock, 0)
    app.router.add_post("/", _tsa_post)
    return app


@dataclass(frozen=True, slots=True, kw_only=True)
class PkiServers:
    """Running OCSP and TSA servers; ``close()`` stops both."""

    ocsp_url: str
    tsa_url: str
    _runners: tuple[web.AppRunner, ...]

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    real_port = runner.addresses[0][1]  # one site per runner: its bound (host, port)
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{real_port}"


async def start_pki_servers(
    ca: DevCA, host: str = "127.0.0.1", ocsp_port: int = 0, tsa_port: int = 0, *,
    clock: Clock = _utcnow, ocsp_validity_seconds: int = 3600,
) -> PkiServers:
    """Start the OCSP responder and the TSA (port 0 picks a free port; the handle has the real URLs).

    Raises:
        OSError: a port cannot be bound.
    """
    ocsp_runner, ocsp_url = await _start(
        make_ocsp_app(ca, clock=clock, ocsp_validity_seconds=ocsp_validity_seconds), host, ocsp_port
    )
    try:
        tsa_runner, tsa_url = await _start(make_tsa_app(ca, clock=clock), host, tsa_port)
    except BaseException:
        await ocsp_runner.cleanup()
        raise
    return PkiServers(ocsp_url=ocsp_url, tsa_url=tsa_url, _runners=(ocsp_runner, tsa_runner))
