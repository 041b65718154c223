"""Admin API handlers of the ``local-groups`` tag: this server's local groups of clients, subjects of access
rights as ``LOCALGROUP:CODE`` (I/O). Every change rebuilds the serverconf snapshot."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.context import AdminContext, Call
from gateway.admin.handlers.common import changes_serverconf, client_in_path, page
from gateway.identifiers import ClientId, parse_client
from gateway.serverconf.access import LocalGroupId


def _group_in_path(request: web.Request) -> LocalGroupId:
    return LocalGroupId(code=request.match_info["code"])


def _group_json(group: LocalGroupId, members: frozenset[ClientId]) -> dict[str, Any]:
    return {"code": group.code, "members": sorted(str(m) for m in members)}


async def _group(ctx: AdminContext, group: LocalGroupId) -> dict[str, Any]:
    groups = await ctx.serverconf.list_groups()
    return _group_json(group, groups.get(group, frozenset()))


async def list_local_groups(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    groups = await ctx.serverconf.list_groups()
    return page(request, [_group_json(g, m) for g, m in groups.items()])


@changes_serverconf
async def add_local_group(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    group = LocalGroupId(code=call.body["code"])
    await ctx.serverconf.add_group(group, description=call.body.get("description", ""))
    return _group_json(group, frozenset())


@changes_serverconf
async def remove_local_group(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.serverconf.remove_group(_group_in_path(request))


@changes_serverconf
async def add_local_group_member(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    group = _group_in_path(request)
    await ctx.serverconf.add_group_member(group, parse_client(call.body["client"], encoded=False))
    # read back from the store, which the snapshot rebuilt afterwards by changes_serverconf does not affect
    return await _group(ctx, group)


@changes_serverconf
async def remove_local_group_member(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.serverconf.remove_group_member(_group_in_path(request), client_in_path(request))


__all__ = [
    "add_local_group", "add_local_group_member", "list_local_groups", "remove_local_group", "remove_local_group_member",
]
