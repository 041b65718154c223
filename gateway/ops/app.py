"""The ops port: ``/metrics``, ``/healthz`` and ``/readyz`` as an aiohttp application of its own (I/O).

- ``GET /metrics``: the Prometheus text exposition (:func:`gateway.ops.metrics.render`), after the server's
  refresh of its time-derived gauges;
- ``GET /healthz``: liveness only: 200 ``{"status": "alive"}`` while the process answers;
- ``GET /readyz``: every readiness check as JSON (:func:`gateway.ops.readiness.report`); 503 while one fails.
  The checks run together, bounded by :data:`READY_TIMEOUT_SECONDS`: a check that does not finish in time
  is red.

Never mounted on a proxy or admin port (it needs no authentication: keep it on an internal network).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.ops.metrics import CONTENT_TYPE, render
from gateway.ops.readiness import Check, report

READY_TIMEOUT_SECONDS = 5.0  # seconds for all readiness checks together

Refresh = Callable[[], Awaitable[None]]
Checks = Callable[[], Awaitable[Sequence[Check]]]


def build_ops_app(registry: CollectorRegistry, *, refresh: Refresh, checks: Checks) -> web.Application:
    """The ops application: ``refresh`` sets the time-derived gauges before a scrape, ``checks`` gathers the
    readiness checks."""

    async def metrics(_request: web.Request) -> web.Response:
        await refresh()
        return web.Response(body=render(registry), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                result = list(await checks())
        except TimeoutError:
            result = [Check(name="checks", ok=False,
                            detail=f"the readiness checks did not finish within {READY_TIMEOUT_SECONDS:g} s")]
        status, body = report(result)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


__all__ = ["READY_TIMEOUT_SECONDS", "build_ops_app"]
