"""Admin API handlers of the ``opmon`` tag: reading operational-monitoring records (I/O).

Filters are checked here, so that a malformed one is a 400 naming it rather than an empty page: ``from`` and
``to`` are RFC 3339 times with a zone, ``client`` a member or subsystem and ``service`` a service in
``/``-joined form, ``outcome`` ``ok`` or ``failed``, ``side`` ``client`` or ``server``, ids at most 255
characters. Pages are ``limit``/``offset`` with the filtered ``total``, newest first (docs/admin-api.md).
"""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web

from gateway.admin.context import AdminContext, Call
from gateway.admin.handlers.common import query_time
from gateway.admin.schema import page_body, parse_page
from gateway.errors import RequestError
from gateway.identifiers import ServiceId, parse_client
from gateway.opmon.record import OUTCOMES, SIDES, OpQuery, Outcome, Side

MAX_ID = 255  # characters of a request or message id filter (as stored)


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in allowed:
        raise RequestError(f"query parameter {name}={value[:20]!r} is not {' or '.join(allowed)}")
    return value


def _id(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is not None and not 0 < len(value) <= MAX_ID:
        raise RequestError(f"query parameter {name} must be 1 to {MAX_ID} characters")
    return value


def opmon_query(request: web.Request) -> OpQuery:
    """The filters of a request (module docstring).

    Raises:
        RequestError: a malformed filter (IdentifierError for a malformed client or service). A ``from`` at
            or after ``to`` is an empty range: it matches nothing (as the schema allows it, it is not refused).
    """
    q = request.query
    since, until = query_time(request, "from"), query_time(request, "to")
    client = q.get("client")
    service = q.get("service")
    outcome = _choice(request, "outcome", OUTCOMES)
    side = _choice(request, "side", SIDES)
    return OpQuery(
        since=since, until=until,
        client=None if client is None else str(parse_client(client, encoded=False)),
        service=None if service is None else str(ServiceId.parse(service, encoded=False)),
        outcome=cast("Outcome | None", outcome), side=cast("Side | None", side),  # checked by _choice
        request_id=_id(request, "request_id"), message_id=_id(request, "message_id"),
    )


async def list_opmon_records(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    page = parse_page(request.query)
    query = opmon_query(request)
    if ctx.opmon is None:
        return page_body([], total=0, page=page)
    found, total = await ctx.opmon.query(query, limit=page.limit, offset=page.offset)
    return page_body([r.to_dict() for r in found], total=total, page=page)


__all__ = ["list_opmon_records", "opmon_query"]
