"""Admin API handlers of the ``users`` tag: the admin API's user accounts and their roles (I/O)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.context import ApiContext, Call
from gateway.admin.handlers.common import iso, page
from gateway.admin.roles import ROLES, parse_roles
from gateway.admin.store import UserInfo


def _user_json(u: UserInfo) -> dict[str, Any]:
    return {"username": u.username, "roles": [r for r in ROLES if r in u.roles], "created_at": iso(u.created_at),
            "failed_logins": u.failed_logins, "locked_until": iso(u.locked_until)}


async def list_users(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    return page(request, [_user_json(u) for u in await ctx.store.list_users()])


async def add_user(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    b = call.body
    return _user_json(await ctx.store.add_user(b["username"], b["password"], parse_roles(b["roles"]), now=ctx.clock()))


async def get_user(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    return _user_json(await ctx.store.get_user(request.match_info["username"]))


async def set_user_password(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    await ctx.store.set_password(request.match_info["username"], call.body["password"], now=ctx.clock())


async def set_user_roles(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    return _user_json(await ctx.store.set_roles(request.match_info["username"], parse_roles(call.body["roles"])))


async def unlock_user(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    await ctx.store.unlock(request.match_info["username"])


async def remove_user(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    await ctx.store.remove_user(request.match_info["username"])


__all__ = ["add_user", "get_user", "list_users", "remove_user", "set_user_password", "set_user_roles", "unlock_user"]
