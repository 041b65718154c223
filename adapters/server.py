"""The adapters' HTTP server: mounts each adapter under ``/{name}`` in one aiohttp application (I/O).

``/healthz`` answers when every adapter has started. Exactly one middleware turns our errors into the
service's JSON error body (never an ``X-Road-Error`` header: these are the service's errors).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog
from aiohttp import web

from adapters.config import AdaptersConfig
from gateway.adapterapi import (
    AdapterRequest,
    ServiceAdapter,
    ServiceBadRequest,
    ServiceHttpError,
    ServiceInternalError,
    ServiceMethodNotAllowed,
    ServiceNotFound,
    ServicePayloadTooLarge,
    error_response,
    json_response,
)
from gateway.errors import ConfigError, GatewayError, RequestError

log = structlog.get_logger(__name__)

ADAPTERS = web.AppKey("adapters", dict[str, ServiceAdapter])

_HTTP_FAULTS: dict[int, type[RequestError]] = {
    400: ServiceBadRequest, 404: ServiceNotFound, 405: ServiceMethodNotAllowed, 413: ServicePayloadTooLarge,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where errors become responses."""
    try:
        return await handler(request)
    except GatewayError as e:
        if request.writer is not None and request.writer.output_size > 0:
            raise  # part of a response is sent already: aiohttp breaks the connection, the caller sees it
        return error_response(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        if e.status >= 500:
            return error_response(ServiceInternalError(e.reason))
        fault = _HTTP_FAULTS.get(e.status)
        err = fault(e.reason) if fault is not None else ServiceHttpError(e.reason, http_status=e.status)
        return error_response(err, headers={k: v for k, v in e.headers.items() if k.lower() == "allow"})


async def _dispatch(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    adapter = request.app[ADAPTERS].get(name)
    if adapter is None:
        raise ServiceNotFound(f"no service {name[:100]!r} here")
    # The path below the mount point, still percent-encoded: "" or "/...". Taken from the raw path so that
    # nothing is decoded twice (the mount name itself may have been sent encoded).
    parts = request.rel_url.raw_path.split("/", 2)
    sub = "/" + parts[2] if len(parts) == 3 else ""
    call = AdapterRequest(http=request, raw_path=sub, query=tuple(request.query.items()))
    return await adapter.handle(call)


async def _healthz(request: web.Request) -> web.StreamResponse:
    adapters: dict[str, ServiceAdapter] = request.app[ADAPTERS]
    return json_response({"status": "ok", "adapters": sorted(adapters)})


def build_app(adapters: Mapping[str, ServiceAdapter]) -> web.Application:
    """An application serving each adapter under ``/{name}`` (the mapping's key) and ``/healthz``.

    The adapters are started when the application starts and closed when it stops (``cleanup_ctx``).

    Raises:
        ConfigError: a mapping key differs from its adapter's name.
    """
    for name, adapter in adapters.items():
        if name != adapter.name:
            raise ConfigError(f"adapter mounted as {name!r} is named {adapter.name!r}")
    app = web.Application(middlewares=[error_middleware])
    mounted: dict[str, ServiceAdapter] = dict(adapters)
    app[ADAPTERS] = mounted

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        started: list[ServiceAdapter] = []
        mounted = app[ADAPTERS]
        try:
            for adapter in mounted.values():
                started.append(adapter)
                await adapter.start()
            log.info("adapters.started", adapters=sorted(mounted))
            yield
        finally:
            for adapter in reversed(started):
                try:
                    await adapter.close()
                except Exception:  # one failed close must not keep the others open
                    log.exception("adapters.close_failed", adapter=adapter.name)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/healthz", _healthz)
    app.router.add_route("*", "/{name}", _dispatch)
    app.router.add_route("*", "/{name}/{tail:.*}", _dispatch)
    return app


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningAdapters:
    """Adapters serving on a socket: the base URL, one URL per adapter, and :meth:`close`."""

    base_url: str
    urls: dict[str, str]
    runner: web.AppRunner

    async def close(self) -> None:
        """Stop accepting, finish requests in flight, close every adapter."""
        await self.runner.cleanup()


async def start_adapters(
    spec: Mapping[str, ServiceAdapter] | AdaptersConfig, host: str | None = None, port: int | None = None
) -> RunningAdapters:
    """Start the adapters on ``host:port`` (port 0: any free port) for embedding in the demo and tests.

    ``host`` and ``port`` default to the config's (or 127.0.0.1 and 0 for a plain mapping).

    Raises:
        ConfigError: an adapter cannot start (its resources), or the address cannot be bound.
    """
    if isinstance(spec, AdaptersConfig):
        adapters: Mapping[str, ServiceAdapter] = spec.adapters
        host = host if host is not None else spec.host
        port = port if port is not None else spec.port
    else:
        adapters = spec
    host = host if host is not None else "127.0.0.1"
    port = port if port is not None else 0
    runner = web.AppRunner(build_app(adapters), access_log=None)
    await runner.setup()  # runs cleanup_ctx: adapters start here
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    base = f"http://{shown}:{bound_port}"
    return RunningAdapters(base_url=base, urls={n: f"{base}/{n}" for n in adapters}, runner=runner)
