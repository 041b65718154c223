"""Admin API handlers of the ``globalconf`` tag: the global configuration's status, and downloading it now
(I/O, through :class:`gateway.globalconf.updater.GlobalConfUpdater`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.context import AdminContext, Call


async def get_global_conf_status(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return ctx.globalconf.status().to_dict()


async def refresh_global_conf(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    r = await ctx.globalconf.refresh()
    call.details["refresh"] = {"accepted": r.accepted, "changed": r.changed, "version": r.version}
    return {"accepted": r.accepted, "changed": r.changed, "version": r.version, "url": r.url, "errors": list(r.errors)}


__all__ = ["get_global_conf_status", "refresh_global_conf"]
