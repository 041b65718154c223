"""The central server's HTTP application and its embedding helper (I/O).

Routes (plain HTTP; integrity comes from the signature, so any static server or CDN may mirror them):

- ``GET /globalconf``: the newest signed configuration, byte for byte as stored; ``ETag`` is its SHA-256,
  ``Cache-Control: no-cache`` (mirrors revalidate, ``If-None-Match`` gives 304);
- ``GET /anchor``: the anchor of the active configuration-signing keys;
- ``GET /healthz``: 200 while the newest publication is unexpired, else 503;
- ``POST /registration``: a security server's signed management request (registration of an authentication
  certificate or a client, or their deletion), stored for a registration officer; ``GET /registration/{id}``
  tells its state (docs/registration.md).

A background task (``cleanup_ctx``) runs :func:`~gateway.central.publisher.publish_if_due` every
``publish_interval_seconds``; :class:`PublishLoop` exposes one step (:meth:`PublishLoop.run_once`) so that
tests trigger a publication directly instead of sleeping. Errors are turned into JSON
``{"type","message","detail"}`` by the one middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.central import check_settings, migrate_central, registration
from gateway.central.management import MAX_REQUEST_BYTES
from gateway.central.publisher import (
    Publication,
    central_url,
    current_anchor,
    latest_publication,
    publish,
    publish_if_due,
)
from gateway.central.signingkeys import ensure_signing_key
from gateway.errors import ConfigError, GatewayError, GlobalConfError, PayloadTooLarge, RequestError
from gateway.globalconf.model import format_time
from gateway.ops.app import build_ops_app
from gateway.ops.metrics import CentralMetrics
from gateway.ops.readiness import Check, deadline_check
from gateway.settings import CentralSettings, Settings
from gateway.sockets import listen
from gateway.storage.db import make_engine

log = structlog.get_logger("gateway.central")

Clock = Callable[[], datetime]
JSON = "application/json"


def utc_now() -> datetime:
    return datetime.now(UTC)


class PublishLoop:
    """Calls ``publish_if_due`` every ``publish_interval_seconds``; one step is :meth:`run_once`."""

    def __init__(self, engine: AsyncEngine, settings: CentralSettings, *, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._waiters: list[asyncio.Future[Publication | None]] = []

    async def run_once(self, now: datetime | None = None) -> Publication | None:
        """One check: publish if due; returns the new publication or None."""
        async with self._lock:
            pub = await publish_if_due(self.engine, self.settings, now or self.clock())
        if pub is not None:
            log.info("globalconf_published", version=pub.version, expires_at=format_time(pub.expires_at))
        return pub

    async def publish_now(self, now: datetime | None = None) -> Publication:
        """Publish unconditionally (the CLI's ``publish``, tests)."""
        async with self._lock:
            pub = await publish(self.engine, self.settings, now or self.clock())
        log.info("globalconf_published", version=pub.version, expires_at=format_time(pub.expires_at))
        return pub

    def trigger(self) -> asyncio.Future[Publication | None]:
        """Wake the loop for an immediate check (e.g. after a registry change).

        The returned future resolves with the outcome of that check (the new publication or None), or
        its exception, so a caller can wait for it without sleeping.
        """
        waiter: asyncio.Future[Publication | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        return waiter

    @staticmethod
    def _resolve(
        waiters: list[asyncio.Future[Publication | None]], result: Publication | None,
        error: BaseException | None,
    ) -> None:
        for waiter in waiters:
            if waiter.done():
                continue
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(result)

    async def run(self) -> None:
        """Check forever; an error is logged and retried at the next interval, never fatal."""
        while True:
            # Only callers that triggered before this check started get its outcome: a trigger that
            # arrives during the check (after a registry change, say) gets the next one.
            self._wake.clear()
            waiters, self._waiters = self._waiters, []
            try:
                self._resolve(waiters, await self.run_once(), None)
            except GatewayError as e:
                log.error("globalconf_publication_failed", error=e.diagnostics())
                self._resolve(waiters, None, e)
            except Exception as e:  # a bug or a database outage: keep serving the last publication
                log.exception("globalconf_publication_failed")
                self._resolve(waiters, None, e)
            except asyncio.CancelledError:
                self._resolve(waiters, None, ConfigError("the central server is shutting down"))
                raise
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that arrives in the turn
            # the event is set (a registry change's trigger just before shutdown), and the loop then ran on, so
            # the central server's close waited a whole interval per round (seen as a hang in tests)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.publish_interval_seconds):
                    await self._wake.wait()


ENGINE = web.AppKey("central_engine", AsyncEngine)
SETTINGS = web.AppKey("central_settings", CentralSettings)
PUBLISHER = web.AppKey("central_publisher", PublishLoop)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn our errors into JSON ``{"type","message","detail"}`` with their HTTP status."""
    try:
        return await handler(request)
    except GatewayError as e:
        # The central server is no proxy: a Server.* fault has no side here (Server.OutdatedGlobalConf).
        if e.http_status >= 500:
            log.error("request_failed", path=request.path, error=e.diagnostics())
        body = {"type": e.xroad_type, "message": e.message, "detail": e.hint or ""}
        return web.json_response(body, status=e.http_status, headers={"X-Road-Error": e.xroad_type})


def _etag(digest: str) -> str:
    return f'"{digest}"'


def _not_modified(request: web.Request, etag: str) -> bool:
    wanted = request.headers.get("If-None-Match", "")
    return any(tag.strip() in (etag, "*") for tag in wanted.split(","))


def _body(request: web.Request, data: bytes, digest: str) -> web.Response:
    etag = _etag(digest)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type=JSON, headers=headers)


async def get_globalconf(request: web.Request) -> web.Response:
    pub = await latest_publication(request.app[ENGINE])
    if pub is None:
        raise GlobalConfError(
            "no global configuration has been published yet",
            hint="run `gateway central init` and `gateway central publish`",
        )
    return _body(request, pub.data, pub.sha256)


async def get_anchor(request: web.Request) -> web.Response:
    data = await current_anchor(request.app[ENGINE], request.app[SETTINGS])
    return _body(request, data, hashlib.sha256(data).hexdigest())


async def get_healthz(request: web.Request) -> web.Response:
    pub = await latest_publication(request.app[ENGINE])
    now = request.app[PUBLISHER].clock()
    if pub is None:
        return web.json_response({"status": "fail", "reason": "nothing published yet"}, status=503)
    body = {
        "status": "ok" if now < pub.expires_at else "fail",
        "version": pub.version,
        "issued_at": format_time(pub.issued_at),
        "expires_at": format_time(pub.expires_at),
    }
    if now >= pub.expires_at:
        body["reason"] = "the newest publication has expired"
    return web.Response(
        text=json.dumps(body), content_type=JSON, status=200 if body["status"] == "ok" else 503
    )


async def post_registration(request: web.Request) -> web.Response:
    """``POST /registration``: a signed management request from a security server (docs/registration.md)."""
    body = await request.content.read(MAX_REQUEST_BYTES + 1)
    if len(body) > MAX_REQUEST_BYTES:
        raise PayloadTooLarge(f"management request is larger than {MAX_REQUEST_BYTES} bytes")
    record = await registration.submit(
        request.app[ENGINE], body, instance=request.app[SETTINGS].instance,
        now=request.app[PUBLISHER].clock(), origin=request.remote,
        auto_approve_renewal=request.app[SETTINGS].auto_approve_auth_renewal,
    )
    log.info("registration_request_submitted", id=record.id, type=record.type, server=record.server,
             state=record.state, decided_by=record.decided_by)
    return web.json_response(record.to_dict(), status=202)


async def get_registration(request: web.Request) -> web.Response:
    """``GET /registration/{id}``: the state of a request (so that the submitter can follow it)."""
    try:
        request_id = int(request.match_info["id"])
    except ValueError as e:
        raise RequestError(f"registration request id {request.match_info['id'][:40]!r} is not a number") from e
    record = await registration.get_request(request.app[ENGINE], request_id)
    return web.json_response({k: v for k, v in record.to_dict().items() if k != "origin"})


def create_app(
    engine: AsyncEngine, settings: CentralSettings, *, clock: Clock = utc_now, background: bool = True
) -> web.Application:
    """The central server's application; ``background=False`` leaves out the publication loop."""
    app = web.Application(middlewares=[error_middleware])
    app[ENGINE] = engine
    app[SETTINGS] = settings
    app[PUBLISHER] = PublishLoop(engine, settings, clock=clock)
    app.router.add_get("/globalconf", get_globalconf)
    app.router.add_get("/anchor", get_anchor)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_post("/registration", post_registration)
    app.router.add_get("/registration/{id}", get_registration)
    if background:
        app.cleanup_ctx.append(_publish_loop)
    return app


async def _publish_loop(app: web.Application) -> AsyncIterator[None]:
    publisher = app[PUBLISHER]
    task = asyncio.create_task(publisher.run(), name="central-publish-loop")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    waiters, publisher._waiters = publisher._waiters, []
    publisher._resolve(waiters, None, ConfigError("the central server is shutting down"))


class CentralHandle:
    """A running central server (for tests, the demo and ``gateway central serve``)."""

    def __init__(
        self, *, url: str, port: int, engine: AsyncEngine, settings: CentralSettings, app: web.Application,
        runner: web.AppRunner, ops_runner: web.AppRunner | None = None, ops_url: str = "",
    ) -> None:
        self.url = url
        self.ops_url = ops_url  # /metrics, /healthz, /readyz; "" while [central] ops_port is off
        self._ops_runner = ops_runner
        self.port = port
        self.engine = engine
        self.settings = settings
        self.app = app
        self._runner = runner

    @property
    def publisher(self) -> PublishLoop:
        return self.app[PUBLISHER]

    async def publish_now(self, now: datetime | None = None) -> Publication:
        return await self.publisher.publish_now(now)

    async def close(self) -> None:
        """Stop serving, stop the publication loop and close the database engine."""
        if self._ops_runner is not None:
            await self._ops_runner.cleanup()
        await self._runner.cleanup()
        await self.engine.dispose()


async def start_central(
    settings: Settings | CentralSettings,
    *,
    host: str | None = None,
    port: int | None = None,
    clock: Clock = utc_now,
    background: bool = True,
) -> CentralHandle:
    """Migrate, ensure a signing key, bind, publish once and serve; returns a handle with ``url``/``close()``.

    ``host``/``port`` override the settings (port 0: any free port). Without ``public_url`` the published
    URL is ``http://HOST:PORT`` with the port actually bound.

    Raises:
        ConfigError: bad settings, a database that cannot be opened, or an address that cannot be bound.
    """
    central = settings.central if isinstance(settings, Settings) else settings
    central = dataclasses.replace(
        central, host=central.host if host is None else host, port=central.port if port is None else port
    )
    check_settings(central)
    try:
        engine = make_engine(central.database_url)
    except ConfigError as e:
        raise ConfigError(f"[central] key 'database_url': {e.message}", hint=e.hint) from e
    try:
        # (1) schema, (2) a signing key, (3) the socket (the real port is part of the published URL),
        # (4) one publication before the first request can arrive, (5) serve
        await migrate_central(engine)
        await ensure_signing_key(engine, instance=central.instance, key_dir=central.key_dir, now=clock())
        sock = listen(central.host, central.port, what="central server")
        bound_port = sock.getsockname()[1]
        if not central.public_url:
            central = dataclasses.replace(central, port=bound_port)
        app = create_app(engine, central, clock=clock, background=background)
        runner = web.AppRunner(app, access_log=None)
        try:
            await app[PUBLISHER].publish_now()
            await runner.setup()
        except BaseException:
            sock.close()
            raise
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
    except BaseException:
        await engine.dispose()
        raise
    url = f"http://{'[' + central.host + ']' if ':' in central.host else central.host}:{bound_port}"
    ops_runner, ops_url = None, ""
    if central.ops_port >= 0:
        try:
            ops_runner, ops_url = await _start_ops(engine, central, clock)
        except BaseException:
            await runner.cleanup()
            await engine.dispose()
            raise
    log.info("central_server_started", url=url, published_url=central_url(central), ops_url=ops_url)
    return CentralHandle(url=url, port=bound_port, engine=engine, settings=central, app=app, runner=runner,
                         ops_runner=ops_runner, ops_url=ops_url)


PUBLICATION_MARGIN_SECONDS = 60.0  # seconds: /readyz is red this long before the newest publication expires


async def _start_ops(engine: AsyncEngine, central: CentralSettings, clock: Clock) -> tuple[web.AppRunner, str]:
    """The central server's ops port (docs/central.md): its metrics, liveness, and readiness (the database
    answers; the newest publication is unexpired, more than :data:`PUBLICATION_MARGIN_SECONDS` ahead).

    Raises:
        ConfigError: the port cannot be bound.
    """
    metrics = CentralMetrics()

    async def newest() -> Publication | None:
        return await latest_publication(engine)

    async def refresh() -> None:
        pub = await newest()
        now = clock()
        metrics.version.set(0 if pub is None else pub.version)
        if pub is not None:
            metrics.age.set(round((now - pub.issued_at).total_seconds(), 3))
            metrics.expiry.set(round((pub.expires_at - now).total_seconds(), 3))

    async def checks() -> list[Check]:
        try:
            pub = await newest()
        except GatewayError as e:
            result = [Check(name="database", ok=False, detail=e.message)]
        else:
            now = clock()
            result = [Check(name="database", ok=True, detail="readable"), deadline_check(
                "publication", deadline=None if pub is None else pub.expires_at, now=now,
                margin_seconds=PUBLICATION_MARGIN_SECONDS,
                what="the newest publication expires" if pub is None or pub.expires_at > now
                else "the newest publication expired", missing="nothing published yet")]
        for c in result:
            metrics.ready.labels(c.name).set(1 if c.ok else 0)
        return result

    runner = web.AppRunner(build_ops_app(metrics.registry, refresh=refresh, checks=checks), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, central.ops_host, central.ops_port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"central server cannot listen on {central.ops_host}:{central.ops_port} "
                          f"([central] ops_port): {e.strerror or e}") from e
    port = int(runner.addresses[0][1])
    host = f"[{central.ops_host}]" if ":" in central.ops_host else central.ops_host
    return runner, f"http://{host}:{port}"
