"""Admin API handlers of the ``session-keys`` tag: the keys that sign session tokens, public part only (I/O)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin import auth
from gateway.admin.context import ApiContext, Call
from gateway.admin.handlers.common import iso, page


async def list_session_keys(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    keys = await ctx.store.session_keys()
    active = auth.active_key(keys)
    return page(request, [
        {"kid": k.kid, "created_at": iso(k.created_at), "retired_at": iso(k.retired_at),
         "active": active is not None and k.kid == active.kid}
        for k in keys
    ])


async def rotate_session_key(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    key = await ctx.store.rotate_session_key(now=ctx.clock(), ttl_seconds=ctx.settings.session_ttl_seconds)
    call.details["kid"] = key.kid
    return {"kid": key.kid, "created_at": iso(key.created_at), "retired_at": None, "active": True}


__all__ = ["list_session_keys", "rotate_session_key"]
