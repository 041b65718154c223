"""The steps around every admin API handler: the one error middleware with the audit entry, and the route
wrapper that authenticates the caller, checks the roles and reads the body (I/O).

:func:`wrap` runs, for one route of :data:`gateway.admin.routes.ROUTES`, in order:

1. the caller is authenticated (``Authorization: Bearer <session token>`` or
   ``Authorization: X-Road-ApiKey token=<key>``), unless the route is public;
2. one of the caller's current roles is among the route's roles;
3. the JSON body is read (bounded by ``[admin] max_body_bytes``) and validated against the route's schema;
4. the handler runs.

:func:`admin_middleware` turns every error into JSON ``{"type","message","detail"}`` with its 4xx/5xx status
(``detail`` is a correlation id, also in the audit log) and writes the audit entry: for every change (any
method but GET), every refused or failed call, and reads of the routes marked ``audit_reads`` (the message log).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.admin import auth
from gateway.admin.context import CALL, CONTEXT, ApiContext, Call, Impl
from gateway.admin.routes import PATH_PARAMS, PathParams, Route
from gateway.admin.schema import validate
from gateway.admin.store import AuditEntry
from gateway.errors import (
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
)

log = structlog.get_logger("gateway.admin")  # the logger name the operational log has always used

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
C = TypeVar("C", bound=ApiContext)


# ------------------------------------------------------------------------------------- middleware, audit


def _error_response(err: GatewayError, call: Call, headers: dict[str, str] | None = None) -> web.Response:
    message = err.message if not err.hint else f"{err.message} ({err.hint})"
    headers = dict(headers or {})
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="gateway-admin"'
    return web.json_response(
        {"type": err.xroad_type, "message": message, "detail": call.correlation_id},
        status=err.status, headers=headers,
    )


def _result(status: int) -> str:
    return "success" if status < 400 else "refused" if status < 500 else "failed"


async def _audit(request: web.Request, ctx: ApiContext, call: Call, status: int, error: str | None) -> None:
    details = dict(call.details)
    details["correlation_id"] = call.correlation_id
    if error is not None:
        details["error"] = error
    entry = AuditEntry(
        at=ctx.clock(), actor=call.actor, auth=call.auth, remote=request.remote or "-", action=call.action,
        method=request.method, path=request.path[:2048], result=_result(status), status=status, details=details,
    )
    try:
        await ctx.store.write_audit(entry)
    except Exception:  # the call has happened: keep its record in the operational log at least
        log.exception("audit log write failed", **{k: v for k, v in entry.to_dict().items() if k != "id"})


# aiohttp's own refusals (no such route, method not allowed, body over client_max_size), as our faults; any
# other status is the client's bad request.
_HTTP_FAULTS: dict[int, type[RequestError]] = {
    404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge, 415: UnsupportedMediaType,
}


def api_middleware(key: web.AppKey[C]) -> Middleware:
    """The one middleware of an admin application whose context is under ``key``: errors to JSON, then the
    audit entry."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await _handle(request, handler, request.app[key])

    return middleware


async def _handle(request: web.Request, handler: Handler, ctx: ApiContext) -> web.StreamResponse:
    call = Call(action=f"{request.method} {request.path[:48]}")
    request[CALL] = call
    error: str | None = None
    try:
        response = await handler(request)
    except GatewayError as e:
        error = e.message
        response = _error_response(e, call)
    except web.HTTPException as e:  # no such route, method not allowed
        error = f"{request.method} {request.path[:200]}: {e.reason}"
        # a 405 keeps aiohttp's Allow header (RFC 9110 section 15.5.6: it lists the methods the path has)
        allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        response = _error_response(_HTTP_FAULTS.get(e.status, RequestError)(error), call, allow)
    except Exception as e:
        log.exception("admin API internal error", correlation_id=call.correlation_id, action=call.action)
        error = f"internal error ({type(e).__name__})"
        response = _error_response(GatewayError(error), call)
    audit_it = request.method not in ("GET", "HEAD") or response.status >= 400 or (
        call.route is not None and call.route.audit_reads
    )
    if audit_it:
        await _audit(request, ctx, call, response.status, error)
    return response


admin_middleware = api_middleware(CONTEXT)
"""The security server's admin middleware."""


# ------------------------------------------------------------------------------------ authentication


async def authenticate(request: web.Request, ctx: ApiContext, call: Call) -> auth.Principal:
    """The caller of ``request``.

    Raises:
        RequestError: 401 naming what is wrong with the credentials.
    """
    scheme, value = auth.parse_authorization(request.headers.get("Authorization"))
    if scheme == "apikey":
        call.auth = "apikey"
        return await ctx.store.authenticate_api_key(value)
    return await authenticate_session(value, ctx, call)


async def authenticate_session(token: str, ctx: ApiContext, call: Call) -> auth.Principal:
    """The user of a session token (from ``Authorization: Bearer`` or the web interface's session cookie).

    Raises:
        RequestError: 401 naming the first rule the token breaks.
    """
    value = token
    call.auth = "jwt"
    now = ctx.clock()
    # (1)-(5) signature, algorithm, key id, audience, issuer, validity period
    keys = await ctx.store.verification_keys(now=now, ttl_seconds=ctx.settings.session_ttl_seconds)
    claims = auth.verify_token(value, keys=keys, policy=ctx.token_policy, now=now)
    call.actor = claims.subject
    # (6) the user still exists, and the session was not ended by a password change or a logout
    user = await ctx.store.find_user(claims.subject)
    if user is None:
        raise auth.unauthorized(f"user {claims.subject[:64]!r} no longer exists")
    if user.sessions_valid_after is not None and claims.issued_at < user.sessions_valid_after.replace(microsecond=0):
        raise auth.unauthorized("session ended when the password was changed", hint="log in again")
    if await ctx.store.is_token_revoked(claims.token_id):
        raise auth.unauthorized("session token was revoked by a logout", hint="log in again")
    # (7) the user's roles as they are now, not as they were at login
    return auth.Principal(
        name=user.username, kind="jwt", roles=user.roles, token_id=claims.token_id, expires_at=claims.expires_at,
    )


# ------------------------------------------------------------------------------------ the route wrapper


async def _read_json(request: web.Request, limit: int) -> Any:
    """Raises: RequestError: 413 above ``limit`` bytes; 415 if not JSON; 400 if malformed."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body of {request.content_length} bytes is larger than {limit} bytes")
    if request.content_type != "application/json":
        raise UnsupportedMediaType(f"request body must be application/json, not {request.content_type[:60]!r}")
    data = bytearray()
    async for chunk in request.content.iter_chunked(16384):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    try:
        return json.loads(data, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"request body is not valid JSON: {e}") from e


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_parameters(request: web.Request, route: Route, path_params: PathParams) -> None:
    """Path parameters, and string query parameters, against the schemas the OpenAPI document declares.

    Raises:
        RequestError: 400 naming the parameter and the rule it breaks.
    """
    for name in route.path_params:
        schema = path_params[name][1]
        if schema.get("type") == "string":
            validate(request.match_info[name], schema, where=f"path parameter {name}")
    for param in route.query:
        value = request.query.get(param.name)
        if value is not None and param.schema.get("type") == "string":
            validate(value, param.schema, where=f"query parameter {param.name}")


def _redact(body: Any, secrets_: frozenset[str]) -> Any:
    if isinstance(body, dict):
        return {k: ("<redacted>" if k in secrets_ else v) for k, v in body.items()}
    return body


def wrap(route: Route, impl: Impl) -> Handler:
    """The security server's handler of ``route`` (:func:`wrap_route` with its context and path parameters)."""
    return wrap_route(route, impl, CONTEXT, PATH_PARAMS)


def wrap_route(
    route: Route, impl: Callable[[Call, web.Request, C], Awaitable[Any]], key: web.AppKey[C], path_params: PathParams,
) -> Handler:
    """The aiohttp handler of ``route``: steps (1)-(4) above around ``impl``, then its result as the response
    (a JSON body with the route's status, no body for 204, or the response ``impl`` made itself).

    The handler raises what the steps and ``impl`` raise (:class:`RequestError` 401/403/413/415/400 and
    whatever the operation refuses); :func:`admin_middleware` turns it into the error response.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = request.app[key]
        call = request[CALL]
        call.route = route
        call.action = route.operation_id
        if request.match_info:
            call.details["path_params"] = {k: v[:300] for k, v in request.match_info.items()}
        if request.query:
            call.details["query"] = {k: v[:300] for k, v in request.query.items()}
        # (1) authentication, (2) roles
        if not route.public:
            principal = await authenticate(request, ctx, call)
            call.principal, call.actor, call.auth = principal, principal.name, principal.kind
            auth.check_roles(principal, route.roles, operation=route.operation_id)
        # (3) parameters, then the body: recorded for the audit log (secrets left out) before it is validated
        _check_parameters(request, route, path_params)
        if route.request is not None:
            call.body = await _read_json(request, ctx.settings.max_body_bytes)
            call.details["request"] = _redact(call.body, route.secret_fields)
            validate(call.body, route.request)
        # (4) the operation
        result = await impl(call, request, ctx)
        if isinstance(result, web.StreamResponse):
            return result
        if route.status == 204:
            return web.Response(status=204)
        return web.json_response(result, status=route.status)

    return handler


__all__ = ["admin_middleware", "api_middleware", "authenticate", "authenticate_session", "wrap", "wrap_route"]
