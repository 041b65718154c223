"""Running the admin API's operations for the signed-in user of a page (I/O).

:func:`run_op` is the web interface's only way to read or change anything: it looks the operation up in the
API's route table (:data:`gateway.admin.routes.ROUTES`), then, as :func:`gateway.admin.middleware.wrap` does,

1. records the operation in the request's :class:`~gateway.admin.context.Call` (the admin middleware writes
   the audit entry from it: every change, every refusal, and message-log reads);
2. checks that one of the user's current roles is among the route's roles (403 otherwise);
3. validates the body, built from the form, against the route's request schema;
4. runs the API's handler (:data:`gateway.admin.app.HANDLERS`), with the query parameters the API route takes.

The web routes name their path variables as the API routes do (``client_id``, ``service_id``, ``seq``...), so
a handler reads the same ``match_info``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.admin import auth
from gateway.admin.context import CALL, CONTEXT, AdminContext, Impl
from gateway.admin.roles import Role
from gateway.admin.routes import ROUTES_BY_ID, Route
from gateway.admin.schema import validate
from gateway.errors import GatewayError, IdentifierError, RequestError

HANDLERS_KEY = web.AppKey("admin_handlers", dict[str, Impl])
# A copy of a POST request made before its form was read: aiohttp clones (with the query an operation takes)
# only a request whose body is unread.
UNREAD = web.RequestKey("web_unread_request", web.Request)
_FIELD_RE = re.compile(r"\bbody\.([a-z_]+)")
PAGE_LEVEL = "page"  # the form name of an error shown at the top of the page
SECRET_FIELDS = frozenset({"password", "pin", "_csrf"})  # never typed back into a page that refuses a form


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """The signed-in user of a page: who, with which roles, and the session's CSRF token."""

    principal: auth.Principal
    csrf: str

    def may(self, operation_id: str) -> bool:
        """Whether the user's roles allow the operation (the page offers only what it allows)."""
        return bool(self.principal.roles & ROUTES_BY_ID[operation_id].roles)

    @property
    def roles(self) -> frozenset[Role]:
        return self.principal.roles


@dataclass(slots=True, kw_only=True)
class FormError:
    """A refused form: which form, the field at fault (None: the form as a whole), in words, and the type."""

    form: str
    message: str
    xroad_type: str
    field: str | None = None
    values: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(
        cls, form: str, e: GatewayError, values: Mapping[str, str], fields: Mapping[str, str], *,
        identifier: str | None = None, only: str | None = None,
    ) -> FormError:
        """The error ``e`` of form ``form``, placed beside the field its message names (``fields``: form field
        name to its label, which replaces ``body.<name>`` in the message), beside field ``identifier`` for a
        malformed identifier, beside field ``only`` of a one-field form, else on the form."""
        message = e.message if not e.hint else f"{e.message} ({e.hint})"
        values = {k: v for k, v in values.items() if k not in SECRET_FIELDS}
        if e.status == 403:  # a refused role: said at the top of the page, which may not show the form at all
            return cls(form=PAGE_LEVEL, message=message, xroad_type=e.xroad_type, values=dict(values))
        m = _FIELD_RE.search(e.message)
        at = m.group(1) if m and m.group(1) in fields else None
        if at is None and isinstance(e, IdentifierError):
            at = identifier
        if at is None:
            at = only
        if at is not None:
            message = message.replace(f"body.{at}", fields[at])
        return cls(form=form, message=message, xroad_type=e.xroad_type, field=at, values=dict(values))


def context(request: web.Request) -> AdminContext:
    return request.app[CONTEXT]


def authorize(
    request: web.Request, user: User | None, operation_id: str, *, query: Mapping[str, str] | None = None,
) -> Route:
    """Steps (1) and (2) of :func:`run_op` alone, for a page that reads with an operation's permission through
    the code that operation uses (a message-log search); returns the operation's route.

    Raises:
        RequestError: 401 without a user for a non-public operation; 403 if the user's roles do not allow it.
    """
    route = ROUTES_BY_ID[operation_id]
    authorize_route(request, None if user is None else user.principal, route, operation_id, query=query)
    return route


def authorize_route(
    request: web.Request, principal: auth.Principal | None, route: Route, operation_id: str, *,
    query: Mapping[str, str] | None = None,
) -> None:
    """Steps (1) and (2) for ``route`` of any admin API (the security server's or the central server's).

    Raises:
        RequestError: 401 without a user for a non-public operation; 403 if the user's roles do not allow it.
    """
    call = request[CALL]
    # (1) the audit entry names the change, or the page's first message-log read; other reads replace neither
    first_audited_read = route.audit_reads and (call.route is None or not call.route.audit_reads)
    if route.method != "GET" or first_audited_read or call.route is None:
        call.route, call.action = route, operation_id
        if request.match_info:
            call.details["path_params"] = {k: v[:300] for k, v in request.match_info.items()}
        if query:
            call.details["query"] = {k: v[:300] for k, v in query.items()}
    # (2) roles (a public operation, the log-in, has no user yet)
    if not route.public:
        if principal is None:
            raise auth.unauthorized("log in first")
        call.principal, call.actor, call.auth = principal, principal.name, principal.kind
        auth.check_roles(principal, route.roles, operation=operation_id)


async def call_route(
    request: web.Request, route: Route, body: Any, query: Mapping[str, str] | None,
    handler: Callable[[Any, web.Request, Any], Awaitable[Any]], ctx: Any,
) -> Any:
    """Steps (3) and (4) for ``route`` of any admin API: the body against its schema, then the operation's
    ``handler`` with ``ctx`` (the API's context) and the API's query parameters.

    Raises:
        RequestError: 400 if the body breaks the route's schema; and whatever the operation itself raises.
    """
    call = request[CALL]
    # (3) the body against the API's schema
    if route.request is not None:
        body = {} if body is None else body
        call.body = body
        call.details["request"] = (
            {k: ("<redacted>" if k in route.secret_fields else v) for k, v in body.items()}
            if isinstance(body, dict) else body
        )
        validate(body, route.request)
    # (4) the API's handler, with the API's query parameters
    if query is None:
        target = request
    else:
        source = request.get(UNREAD, request)
        target = source.clone(rel_url=source.rel_url.with_query(dict(query)))
    return await handler(call, target, ctx)


async def run_op(
    request: web.Request, user: User | None, operation_id: str, body: Any = None, *,
    query: Mapping[str, str] | None = None,
) -> Any:
    """The result of the API operation ``operation_id`` for ``user`` (None only for a public operation):
    steps (1)-(4) above.

    Raises:
        RequestError: 403 if the user's roles do not allow it; 400 if the body breaks the route's schema; and
            whatever the operation itself raises (:class:`~gateway.errors.GatewayError`).
    """
    route = authorize(request, user, operation_id, query=query)
    return await call_route(request, route, body, query, request.app[HANDLERS_KEY][operation_id], context(request))


def note_error(request: web.Request, e: GatewayError) -> None:
    """Put the refusal into the audit entry (the page answers it, so the middleware sees no exception)."""
    request[CALL].details["error"] = e.message


def form_int(values: Mapping[str, str], name: str) -> int | None:
    """An optional whole number from a form field.

    Raises:
        RequestError: 400 naming the field when it is not a whole number.
    """
    text = values.get(name, "").strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise RequestError(f"body.{name} {text[:20]!r} is not a whole number")
    return int(text)


def form_number(values: Mapping[str, str], name: str) -> float | None:
    """An optional number from a form field.

    Raises:
        RequestError: 400 naming the field when it is not a number.
    """
    text = values.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError as e:
        raise RequestError(f"body.{name} {text[:20]!r} is not a number") from e
    return value


__all__ = [
    "HANDLERS_KEY", "UNREAD", "FormError", "User", "authorize", "authorize_route", "call_route", "context",
    "form_int", "form_number",
    "note_error", "run_op",
]
