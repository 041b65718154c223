"""Admin API handlers of the ``witness`` tag: the witness's state and the evidence it kept (I/O;
docs/witness.md section 1, docs/admin-api.md)."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from gateway.admin.context import AdminContext, Call
from gateway.admin.schema import page_body, parse_page
from gateway.errors import RequestError

MAX_ORIGIN = 512  # characters of an origin filter (as stored)


async def get_witness(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    w = ctx.witness
    if w is None:
        return {"enabled": False, "name": ctx.witness_name, "vkey": None, "logs": []}
    logs = await w.store.logs()
    return {
        "enabled": True, "name": w.signer.key.name, "vkey": w.signer.key.vkey,
        "logs": [{"origin": s.origin, "size": s.size, "root_hash": base64.b64encode(s.root_hash).decode("ascii"),
                  "updated_at": s.updated_at.isoformat().replace("+00:00", "Z")} for s in logs],
    }


async def list_witness_evidence(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    page = parse_page(request.query)
    origin = request.query.get("origin")
    if origin is not None and not 0 < len(origin) <= MAX_ORIGIN:
        raise RequestError(f"query parameter origin must be 1 to {MAX_ORIGIN} characters")
    if ctx.witness is None:
        return page_body([], total=0, page=page)
    rows, total = await ctx.witness.store.evidence(origin=origin, limit=page.limit, offset=page.offset)
    return page_body([r.to_dict() for r in rows], total=total, page=page)


__all__ = ["get_witness", "list_witness_evidence"]
