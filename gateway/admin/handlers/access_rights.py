"""Admin API handlers of the ``access-rights`` tag: who may call a service, or one endpoint of it (I/O). The
rule itself is :class:`gateway.serverconf.access.AccessRule`; every change rebuilds the serverconf snapshot."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.context import AdminContext, Call
from gateway.admin.handlers.common import changes_serverconf, page, query_endpoint, service_in_path
from gateway.errors import RequestError
from gateway.serverconf.access import AccessRule, Endpoint, parse_subject, subject_text


def _rule_json(r: AccessRule) -> dict[str, Any]:
    return {"service": str(r.service), "subject": subject_text(r.subject), "method": r.endpoint.method,
            "path": r.endpoint.path}


async def list_access_rights(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    rules = await ctx.serverconf.list_rules(service=service_in_path(request))
    return page(request, [_rule_json(r) for r in rules])


@changes_serverconf
async def grant_access(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    b = call.body
    rule = AccessRule(
        subject=parse_subject(b["subject"]), service=service_in_path(request),
        endpoint=Endpoint(method=b.get("method", "*"), path=b.get("path", "**")),
    )
    await ctx.serverconf.grant(rule)
    return _rule_json(rule)


@changes_serverconf
async def revoke_access(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    subject = request.query.get("subject")
    if subject is None:
        raise RequestError("query parameter subject is required")
    rule = AccessRule(subject=parse_subject(subject), service=service_in_path(request),
                      endpoint=query_endpoint(request))
    await ctx.serverconf.revoke(rule)


__all__ = ["grant_access", "list_access_rights", "revoke_access"]
