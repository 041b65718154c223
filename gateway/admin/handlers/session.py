"""Admin API handlers of the ``session`` tag: login, logout, the caller, changing one's own password (I/O).

A login issues a session token (:func:`gateway.admin.auth.issue_token`); logout and a password change need
that session token itself, so an API key cannot end a session or change a password.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin import auth
from gateway.admin.context import ApiContext, Call
from gateway.admin.handlers.common import iso
from gateway.admin.roles import ROLES
from gateway.errors import Forbidden


async def login(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    username, password = call.body["username"], call.body["password"]
    call.auth = "password"
    call.actor = username if username and len(username) <= 64 else "-"
    s = ctx.settings
    user = await ctx.store.login(
        username, password, now=ctx.clock(), max_failures=s.max_failed_logins, base_seconds=s.lockout_seconds,
        max_seconds=s.max_lockout_seconds,
    )
    key = await ctx.store.signing_key(now=ctx.clock())
    token, claims = auth.issue_token(key, username=user.username, roles=user.roles, policy=ctx.token_policy,
                                     now=ctx.clock())
    call.details["kid"] = key.kid
    call.details["token_id"] = claims.token_id
    return {"token": token, "token_type": "Bearer", "expires_at": iso(claims.expires_at),
            "roles": [r for r in ROLES if r in user.roles]}


def _session(call: Call) -> auth.Principal:
    p = call.principal
    if p is None or p.kind != "jwt" or p.token_id is None or p.expires_at is None:
        raise Forbidden("this operation needs a session token (log in); an API key cannot do it")
    return p


async def logout(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    p = _session(call)
    assert p.token_id is not None and p.expires_at is not None
    await ctx.store.revoke_token(p.token_id, expires_at=p.expires_at, now=ctx.clock())
    return None


async def get_me(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    p = call.principal
    assert p is not None
    return {"name": p.name, "kind": p.kind, "roles": [r for r in ROLES if r in p.roles],
            "expires_at": iso(p.expires_at)}


async def change_own_password(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    p = _session(call)
    s = ctx.settings
    await ctx.store.login(p.name, call.body["current_password"], now=ctx.clock(), max_failures=s.max_failed_logins,
                          base_seconds=s.lockout_seconds, max_seconds=s.max_lockout_seconds)
    await ctx.store.set_password(p.name, call.body["new_password"], now=ctx.clock())
    return None


__all__ = ["change_own_password", "get_me", "login", "logout"]
