"""Admin API handlers of the ``audit-log`` tag: reading the admin API's own audit log (I/O)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.context import ApiContext, Call
from gateway.admin.schema import page_body, parse_page
from gateway.errors import RequestError


async def list_audit_log(call: Call, request: web.Request, ctx: ApiContext) -> Any:
    page = parse_page(request.query)
    q = request.query
    result = q.get("result")
    if result is not None and result not in ("success", "refused", "failed"):
        raise RequestError(f"query parameter result={result[:20]!r} is not success, refused or failed")
    entries, total = await ctx.store.list_audit(page, actor=q.get("actor"), action=q.get("action"), result=result)
    return page_body([e.to_dict() for e in entries], total=total, page=page)


__all__ = ["list_audit_log"]
