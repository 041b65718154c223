"""Admin API handlers of the ``services`` tag: the services the hosted subsystems provide and their endpoints
(I/O). Every change rebuilds the serverconf snapshot."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.context import AdminContext, Call
from gateway.admin.handlers.common import changes_serverconf, page, query_endpoint, service_in_path
from gateway.identifiers import ServiceId, SubsystemId
from gateway.serverconf import ServiceInfo
from gateway.serverconf.access import Endpoint


def _service_json(s: ServiceInfo) -> dict[str, Any]:
    return {
        "id": str(s.id), "encoded_id": s.id.encoded_id(), "url": s.url, "timeout_seconds": s.timeout_seconds,
        "openapi_url": s.openapi_url, "enabled": s.enabled, "disabled_notice": s.disabled_notice,
        "endpoints": [{"method": e.method, "path": e.path} for e in s.endpoints],
        "data_subject": None if s.data_subject is None else str(s.data_subject),
        "subject_mismatch": s.subject_mismatch, "purpose_required": s.purpose_required,
    }


async def list_services(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    provider_text = request.query.get("provider")
    provider = None if provider_text is None else SubsystemId.parse(provider_text, encoded=False)
    return page(request, [_service_json(s) for s in await ctx.serverconf.list_services(provider=provider)])


@changes_serverconf
async def add_service(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    b = call.body
    info = await ctx.serverconf.add_service(
        ServiceId.parse(b["id"], encoded=False), url=b["url"], timeout_seconds=b.get("timeout_seconds", 60.0),
        openapi_url=b.get("openapi_url"), enabled=b.get("enabled", True), disabled_notice=b.get("disabled_notice", ""),
        endpoints_=[Endpoint(method=e["method"], path=e["path"]) for e in b.get("endpoints", ())],
        data_subject=b.get("data_subject") or None, subject_mismatch=b.get("subject_mismatch", "refuse"),
        purpose_required=b.get("purpose_required", False),
    )
    return _service_json(info)


async def get_service(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return _service_json(await ctx.serverconf.get_service(service_in_path(request)))


@changes_serverconf
async def update_service(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    b = call.body
    info = await ctx.serverconf.update_service(
        service_in_path(request), url=b.get("url"), timeout_seconds=b.get("timeout_seconds"),
        openapi_url=b.get("openapi_url"), enabled=b.get("enabled"), disabled_notice=b.get("disabled_notice"),
        data_subject=b.get("data_subject"), subject_mismatch=b.get("subject_mismatch"),
        purpose_required=b.get("purpose_required"),
    )
    return _service_json(info)


@changes_serverconf
async def remove_service(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.serverconf.remove_service(service_in_path(request))


@changes_serverconf
async def add_endpoint(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    endpoint = Endpoint(method=call.body["method"], path=call.body["path"])
    await ctx.serverconf.add_endpoint(service_in_path(request), endpoint)
    return {"method": endpoint.method, "path": endpoint.path}


@changes_serverconf
async def remove_endpoint(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.serverconf.remove_endpoint(service_in_path(request), query_endpoint(request))


__all__ = [
    "add_endpoint", "add_service", "get_service", "list_services", "remove_endpoint", "remove_service",
    "update_service",
]
