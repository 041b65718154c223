"""Admin API handlers of the ``meta`` tag: the OpenAPI document the server serves (I/O shell; the document is
built by the pure :func:`gateway.admin.openapi.build_document`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.admin.context import AdminContext, Call
from gateway.admin.openapi import build_document


async def get_open_api(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return build_document()


__all__ = ["get_open_api"]
