"""Admin API handlers of the ``clients`` tag: the members and subsystems this security server hosts, and the
TLS certificates of their information systems (I/O). Every change rebuilds the serverconf snapshot."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.context import AdminContext, Call
from gateway.admin.handlers.common import changes_serverconf, client_in_path, page, send_management
from gateway.identifiers import parse_client
from gateway.serverconf import ClientInfo


def _client_json(c: ClientInfo) -> dict[str, Any]:
    return {
        "id": str(c.id), "encoded_id": c.id.encoded_id(), "type": c.id.object_type, "status": c.status,
        "is_auth": c.is_auth, "body_logging": c.body_logging, "is_cert_fingerprints": sorted(c.is_cert_fingerprints),
    }


async def list_clients(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return page(request, [_client_json(c) for c in await ctx.serverconf.list_clients()])


@changes_serverconf
async def add_client(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    b = call.body
    info = await ctx.serverconf.add_client(
        parse_client(b["id"], encoded=False), status=b.get("status", "saved"), is_auth=b.get("is_auth", "https-cert"),
        body_logging=b.get("body_logging", True),
    )
    return _client_json(info)


async def get_client(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return _client_json(await ctx.serverconf.get_client(client_in_path(request)))


@changes_serverconf
async def update_client(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    info = await ctx.serverconf.update_client(
        client_in_path(request), is_auth=call.body.get("is_auth"), body_logging=call.body.get("body_logging"),
    )
    return _client_json(info)


@changes_serverconf
async def set_client_status(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return _client_json(await ctx.serverconf.update_client(client_in_path(request), status=call.body["status"]))


@changes_serverconf
async def remove_client(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.serverconf.remove_client(client_in_path(request))


@changes_serverconf
async def add_is_cert(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    fp = await ctx.serverconf.add_is_cert(client_in_path(request), call.body["pem"].encode("utf-8"))
    call.details["fingerprint"] = fp
    return {"fingerprint": fp}


@changes_serverconf
async def register_client(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    client = (await ctx.serverconf.get_client(client_in_path(request))).id
    return await send_management(ctx, call, "client_reg", client)


async def remove_is_cert(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.serverconf.remove_is_cert(client_in_path(request), request.match_info["fingerprint"])


__all__ = [
    "add_client", "add_is_cert", "get_client", "list_clients", "register_client", "remove_client", "remove_is_cert",
    "set_client_status", "update_client",
]
