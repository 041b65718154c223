"""HTTP endpoints of the development PKI: the OCSP responder, the TSA and the ACME server (I/O shell, aiohttp).

Two applications on two ports (as a real deployment would have two services), and optionally a third for ACME:

* OCSP (RFC 6960 Appendix A): ``POST /`` with ``Content-Type: application/ocsp-request``, and
  ``GET /{base64 of the DER request, URL-encoded}``; answers ``application/ocsp-response``.
* TSA (RFC 3161 section 3.4): ``POST /`` with ``Content-Type: application/timestamp-query``; answers
  ``application/timestamp-reply``.
* ACME (RFC 8555, :mod:`gateway.dev.pki.acme`): ``GET /acme/directory``, ``HEAD|GET /acme/new-nonce`` and the
  POST resources under ``/acme/``; the http-01 fetch goes to the address ``http01_target`` gives for the
  identifier (port 80 of the host name by default; tests point it at the security server's responder).

A body above :data:`MAX_REQUEST_BYTES` gets 413, a POST with another content type 415. Request bytes go
to the pure cores (:mod:`gateway.dev.pki.ocsp_responder`, :mod:`gateway.dev.pki.tsa`); this shell only reads the
clock, refreshes the CA's index (so that ``gateway pki revoke`` in another process takes effect at once)
and writes the answer. An index that cannot be read is answered ``internalError``, never stale statuses.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote

import aiohttp
import structlog
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from gateway.dev.pki.acme import MAX_BODY_BYTES, AcmeAnswer, AcmeServer, Http01Check, ProblemType
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


Http01Target = Callable[[str], tuple[str, int]]
ACME_KEY = web.AppKey("acme", AcmeServer)
HTTP01_KEY: web.AppKey[Http01Target] = web.AppKey("http01_target")
SESSION_KEY = web.AppKey("http01_session", aiohttp.ClientSession)
HTTP01_TIMEOUT_SECONDS = 10.0  # seconds for one http-01 fetch
HTTP01_MAX_BYTES = 1024  # bytes read of an http-01 answer (a key authorization is about 87 characters)


def port_80(identifier: str) -> tuple[str, int]:
    """RFC 8555 8.3: the http-01 fetch goes to port 80 of the identifier."""
    return identifier, 80


def _acme_response(answer: AcmeAnswer) -> web.Response:
    return web.Response(status=answer.status, body=answer.body, headers={
        "Content-Type": answer.content_type, **answer.headers})


async def _acme_directory(request: web.Request) -> web.Response:
    return _acme_response(request.app[ACME_KEY].directory())


async def _acme_nonce(request: web.Request) -> web.Response:
    # RFC 8555 7.2: 200 to HEAD, 204 to GET, never cached
    status = 200 if request.method == "HEAD" else 204
    return web.Response(status=status, headers={"Replay-Nonce": request.app[ACME_KEY].new_nonce(),
                                                "Cache-Control": "no-store"})


async def _http01_fetch(app: web.Application, check: Http01Check) -> tuple[ProblemType | None, str]:
    """RFC 8555 8.3's fetch: None when the key authorization came back, else the problem type and why."""
    host, port = app[HTTP01_KEY](check.identifier)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/.well-known/acme-challenge/{check.token}"
    try:
        async with app[SESSION_KEY].get(url, allow_redirects=False,
                                        timeout=aiohttp.ClientTimeout(total=HTTP01_TIMEOUT_SECONDS)) as resp:
            body = await resp.content.read(HTTP01_MAX_BYTES)
            if resp.status != 200:
                return "incorrectResponse", f"{url} answered HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        return "connection", f"{url} cannot be fetched: {type(e).__name__}: {e}"
    if body.strip() != check.key_authorization.encode("ascii"):
        return "incorrectResponse", f"{url} did not answer the key authorization of this challenge"
    return None, "ok"


async def _acme_post(request: web.Request) -> web.Response:
    app = request.app
    acme = app[ACME_KEY]
    body = await request.content.read(MAX_BODY_BYTES + 1)
    answer = acme.post(request.match_info["path"], request.content_type, body, now=app[CLOCK_KEY]())
    if isinstance(answer, Http01Check):  # RFC 8555 8.3: fetch the key authorization, then answer
        problem, detail = await _http01_fetch(app, answer)
        _log.info("acme_http01", identifier=answer.identifier, ok=problem is None, detail=detail)
        answer = acme.complete_challenge(answer, ok=problem is None, detail=detail, now=app[CLOCK_KEY](),
                                         problem=problem or "incorrectResponse")
    return _acme_response(answer)


def make_acme_app(acme: AcmeServer, *, clock: Clock = _utcnow, http01_target: Http01Target = port_80
                  ) -> web.Application:
    """The ACME server application (routes under ``/acme/``); set ``acme.base_url`` once its port is known."""
    app = web.Application(client_max_size=MAX_BODY_BYTES + 1)
    app[CA_KEY] = acme.ca
    app[CLOCK_KEY] = clock
    app[ACME_KEY] = acme
    app[HTTP01_KEY] = http01_target

    async def session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
            app[SESSION_KEY] = s
            yield

    app.cleanup_ctx.append(session)
    app.router.add_get("/acme/directory", _acme_directory)
    app.router.add_route("HEAD", "/acme/new-nonce", _acme_nonce)
    app.router.add_get("/acme/new-nonce", _acme_nonce, allow_head=False)
    app.router.add_post("/acme/{path:.+}", _acme_post)
    return app


@dataclass(frozen=True, slots=True, kw_only=True)
class PkiServers:
    """Running OCSP and TSA servers (and the ACME server if asked for); ``close()`` stops them."""

    ocsp_url: str
    tsa_url: str
    _runners: tuple[web.AppRunner, ...]
    acme_directory_url: str | None = None

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
    clock: Clock = _utcnow, ocsp_validity_seconds: int = 3600, acme: AcmeServer | None = None,
    acme_port: int = 0, http01_target: Http01Target = port_80,
) -> PkiServers:
    """Start the OCSP responder and the TSA, and with ``acme`` the ACME server (port 0 picks a free port; the
    handle has the real URLs).

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
    runners: tuple[web.AppRunner, ...] = (ocsp_runner, tsa_runner)
    directory_url = None
    if acme is not None:
        try:
            acme_runner, acme_url = await _start(make_acme_app(acme, clock=clock, http01_target=http01_target),
                                                 host, acme_port)
        except BaseException:
            for runner in runners:
                await runner.cleanup()
            raise
        acme.base_url = f"{acme_url}/acme"
        directory_url = acme.url("directory")
        runners += (acme_runner,)
    return PkiServers(ocsp_url=ocsp_url, tsa_url=tsa_url, _runners=runners, acme_directory_url=directory_url)
