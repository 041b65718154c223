"""Admin API handlers of the ``api-keys`` tag: API keys for automation (I/O). A key is shown once, when it is
created; the store keeps only its digest."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.context import ApiContext, Call
from gateway.admin.handlers.common import iso, page
from gateway.admin.roles import ROLES, parse_roles
from gateway.admin.store import ApiKeyInfo


def _api_key_json(k: ApiKeyInfo) -> dict[str, Any]:
    return {"id": k.id, "name": k.name, "roles": [r for r in ROLES if r in k.roles], "created_by": k.created_by,
            "created_at": iso(k.created_at), "revoked_at": iso(k.revoked_at)}


async def list_api_keys(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    return page(request, [_api_key_json(k) for k in await ctx.store.list_api_keys()])


async def create_api_key(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    info, key = await ctx.store.create_api_key(
        call.body["name"], parse_roles(call.body["roles"]), created_by=call.actor, now=ctx.clock()
    )
    call.details["api_key_id"] = info.id
    return {**_api_key_json(info), "key": key}


async def revoke_api_key(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    await ctx.store.revoke_api_key(request.match_info["key_id"], by=call.actor, now=ctx.clock())


__all__ = ["create_api_key", "list_api_keys", "revoke_api_key"]
