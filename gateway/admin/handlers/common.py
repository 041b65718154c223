"""What several admin API handler modules share: identifiers in paths, pages, times, the serverconf reload
(pure but for :func:`changes_serverconf`, whose wrapper awaits the reload).

Identifiers in paths use X-Road's ``:``-joined form; :mod:`gateway.identifiers` parses them, so a malformed
one is an :class:`~gateway.errors.IdentifierError` (400).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.admin.context import AdminContext, Call, Impl
from gateway.admin.schema import page_body, paginate, parse_page
from gateway.central.management import RequestType
from gateway.errors import Conflict, IdentifierError, RequestError
from gateway.identifiers import ClientId, MemberId, ServiceId, SubsystemId
from gateway.serverconf.access import Endpoint


def iso(t: datetime | None) -> str | None:
    """``t`` as RFC 3339 with ``Z`` (it is UTC already), or ``None``."""
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def query_time(request: web.Request, name: str) -> datetime | None:
    """The query parameter ``name`` as an aware UTC time, or None if absent.

    Raises:
        RequestError: not an RFC 3339 time with a time zone.
    """
    text = request.query.get(name)
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise RequestError(f"query parameter {name} {text[:40]!r} is not a time such as 2026-01-02T03:04:05Z") from e
    if t.tzinfo is None:
        raise RequestError(f"query parameter {name} {text[:40]!r} has no time zone; add Z for UTC")
    return t.astimezone(UTC)


def client_in_path(request: web.Request) -> ClientId:
    """The ``{client_id}`` path parameter: a member or a subsystem.

    Raises:
        IdentifierError: neither form, or a malformed part.
    """
    text = request.match_info["client_id"]
    if text.count(":") == 2:
        return MemberId.parse_encoded_id(text)
    if text.count(":") == 3:
        return SubsystemId.parse_encoded_id(text)
    raise IdentifierError(
        f"client identifier {text[:80]!r} in the path must be INSTANCE:CLASS:MEMBER or "
        "INSTANCE:CLASS:MEMBER:SUBSYSTEM"
    )


def service_in_path(request: web.Request) -> ServiceId:
    """The ``{service_id}`` path parameter.

    Raises:
        IdentifierError: malformed.
    """
    return ServiceId.parse_encoded_id(request.match_info["service_id"])


def query_endpoint(request: web.Request) -> Endpoint:
    """The endpoint named by the ``method`` and ``path`` query parameters (default: every method and path)."""
    return Endpoint(method=request.query.get("method", "*"), path=request.query.get("path", "**"))


async def send_management(ctx: AdminContext, call: Call, type_: RequestType, client: ClientId | None,
                          ) -> dict[str, Any]:
    """A management request sent to the central server (:attr:`AdminContext.management`), and its answer.

    Raises:
        Conflict: this server sends none (no central server to send to, as in a bare admin process).
        RequestError, PeerError: the central server's refusal, or it cannot be reached.
    """
    if ctx.management is None:
        raise Conflict("this server sends no management requests: the admin API runs without the security "
                       "server (use 'gateway server register' on its machine)")
    record = await ctx.management(type_, client)
    answer = {"id": record.get("id") if isinstance(record.get("id"), int | str) else str(record.get("id")),
              "state": str(record.get("state", "submitted"))[:64]}
    call.details["management_request"] = {"type": type_, **answer}
    return answer


def page(request: web.Request, items: list[Any]) -> dict[str, Any]:
    """The page of ``items`` the ``limit`` and ``offset`` query parameters ask for.

    Raises:
        RequestError: a malformed ``limit`` or ``offset``.
    """
    p = parse_page(request.query)
    chunk, total = paginate(items, p)
    return page_body(list(chunk), total=total, page=p)


def changes_serverconf(impl: Impl) -> Impl:
    """``impl``, followed by rebuilding the security server's in-memory serverconf snapshot once it has
    changed the configuration, so the proxies see the change at once. Nothing is rebuilt when ``impl`` raises.
    """

    @functools.wraps(impl)
    async def changed(call: Call, request: web.Request, ctx: AdminContext) -> Any:
        result = await impl(call, request, ctx)
        await ctx.reload_serverconf()
        return result

    return changed


__all__ = [
    "changes_serverconf", "client_in_path", "iso", "page", "query_endpoint", "query_time", "send_management",
    "service_in_path",
]
