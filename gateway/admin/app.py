"""The security server's admin REST API as an aiohttp application (I/O).

One application on its own port (``[server] admin_host``/``admin_port``), never on a proxy port. Its routes are
exactly those of :data:`gateway.admin.routes.ROUTES`; each is wrapped so that, in order:

1. the caller is authenticated (``Authorization: Bearer <session token>`` or
   ``Authorization: X-Road-ApiKey token=<key>``), unless the route is public;
2. one of the caller's current roles is among the route's roles;
3. the JSON body is read (bounded by ``[admin] max_body_bytes``) and validated against the route's schema;
4. the handler runs; identifiers in paths, bodies and queries are parsed with :mod:`gateway.identifiers`;
5. after a serverconf change the security server's in-memory snapshot is rebuilt, so the proxies see it at once.

The one middleware turns every error into JSON ``{"type","message","detail"}`` with its 4xx/5xx status
(``detail`` is a correlation id, also in the audit log) and writes the audit entry: for every change (any
method but GET), every refused or failed call, and reads of the message log.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from gateway.admin import auth
from gateway.admin.auth import Principal
from gateway.admin.logapi import LOG_HANDLERS
from gateway.admin.openapi import build_document
from gateway.admin.roles import ROLES, parse_roles
from gateway.admin.routes import ROUTES, Route
from gateway.admin.schema import page_body, paginate, parse_page, validate
from gateway.admin.store import AdminStore, ApiKeyInfo, AuditEntry, UserInfo
from gateway.errors import ConfigError, GatewayError, IdentifierError, RequestError, TrustError
from gateway.globalconf.updater import GlobalConfUpdater
from gateway.identifiers import ClientId, MemberId, SecurityServerId, ServiceId, SubsystemId, parse_client
from gateway.messagelog.store import MessageLogStore
from gateway.serverconf import ClientInfo, ServiceInfo
from gateway.serverconf.access import AccessRule, Endpoint, LocalGroupId, parse_subject, subject_text
from gateway.serverconf.store import ServerConfStore
from gateway.settings import AdminSettings
from gateway.token.model import CertEntry, KeyEntry
from gateway.token.soft import SoftToken

log = structlog.get_logger("gateway.admin")

Clock = Callable[[], datetime]
MAX_ORIGIN_LENGTH = 255  # characters; as gateway.messagelog.record


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminContext:
    """What the admin API works on; opened by :mod:`gateway.server.runtime` and passed in."""

    server_id: SecurityServerId
    settings: AdminSettings
    store: AdminStore
    serverconf: ServerConfStore
    globalconf: GlobalConfUpdater
    messagelog: MessageLogStore
    reload_serverconf: Callable[[], Awaitable[None]]  # SecurityServer.reload_serverconf
    clock: Clock
    token: SoftToken | None = None  # with [server] token_dir: the server's software token
    reload_keys: Callable[[], Awaitable[bool]] | None = None  # SecurityServer.reload_keys

    @property
    def origin(self) -> str:
        """The message-log origin of this server (the proxies log under it)."""
        return str(self.server_id)

    @property
    def token_policy(self) -> auth.TokenPolicy:
        return auth.TokenPolicy(
            issuer=f"gateway:{self.server_id}", audience=self.settings.audience,
            ttl_seconds=self.settings.session_ttl_seconds,
        )


@dataclass(slots=True, kw_only=True)
class Call:
    """What one request has established so far (mutable, per request): read by the audit step."""

    action: str
    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    route: Route | None = None
    actor: str = "-"
    auth: str = "none"
    principal: Principal | None = None
    body: Any = None
    details: dict[str, Any] = field(default_factory=dict)


CONTEXT = web.AppKey("admin_context", AdminContext)
CALL = web.RequestKey("admin_call", Call)
Impl = Callable[[Call, web.Request, AdminContext], Awaitable[Any]]


# ------------------------------------------------------------------------------------- middleware, audit


def _error_response(err: GatewayError, call: Call) -> web.Response:
    message = err.message if not err.hint else f"{err.message} ({err.hint})"
    headers = {"WWW-Authenticate": 'Bearer realm="gateway-admin"'} if err.status == 401 else None
    return web.json_response(
        {"type": err.xroad_type, "message": message, "detail": call.correlation_id},
        status=err.status, headers=headers,
    )


def _result(status: int) -> str:
    return "success" if status < 400 else "refused" if status < 500 else "failed"


async def _audit(request: web.Request, call: Call, status: int, error: str | None) -> None:
    ctx = request.app[CONTEXT]
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


@web.middleware
async def admin_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The one middleware: errors to JSON, then the audit entry."""
    call = Call(action=f"{request.method} {request.path[:48]}")
    request[CALL] = call
    error: str | None = None
    try:
        response = await handler(request)
    except GatewayError as e:
        error = e.message
        response = _error_response(e, call)
    except web.HTTPException as e:  # no such route, method not allowed
        code = {404: "Client.NotFound", 405: "Client.MethodNotAllowed"}.get(e.status, "Client.BadRequest")
        error = f"{request.method} {request.path[:200]}: {e.reason}"
        response = _error_response(RequestError(error, code=code, status=e.status), call)
    except Exception as e:
        log.exception("admin API internal error", correlation_id=call.correlation_id, action=call.action)
        error = f"internal error ({type(e).__name__})"
        response = _error_response(GatewayError(error, code="Server.InternalError"), call)
    audit_it = request.method not in ("GET", "HEAD") or response.status >= 400 or (
        call.route is not None and call.route.audit_reads
    )
    if audit_it:
        await _audit(request, call, response.status, error)
    return response


# ------------------------------------------------------------------------------------ authentication


async def authenticate(request: web.Request, ctx: AdminContext, call: Call) -> auth.Principal:
    """The caller of ``request``.

    Raises:
        RequestError: 401 naming what is wrong with the credentials.
    """
    scheme, value = auth.parse_authorization(request.headers.get("Authorization"))
    if scheme == "apikey":
        call.auth = "apikey"
        return await ctx.store.authenticate_api_key(value)
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


async def _read_json(request: web.Request, limit: int) -> Any:
    """Raises: RequestError: 413 above ``limit`` bytes; 415 if not JSON; 400 if malformed."""
    if request.content_length is not None and request.content_length > limit:
        raise RequestError(f"request body of {request.content_length} bytes is larger than {limit} bytes", status=413)
    if request.content_type != "application/json":
        raise RequestError(f"request body must be application/json, not {request.content_type[:60]!r}", status=415)
    data = bytearray()
    async for chunk in request.content.iter_chunked(16384):
        data += chunk
        if len(data) > limit:
            raise RequestError(f"request body is larger than {limit} bytes", status=413)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"request body is not valid JSON: {e}") from e


def _redact(body: Any, secrets_: frozenset[str]) -> Any:
    if isinstance(body, dict):
        return {k: ("<redacted>" if k in secrets_ else v) for k, v in body.items()}
    return body


def _wrap(route: Route, impl: Impl) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = request.app[CONTEXT]
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
        # (3) body: recorded for the audit log (secrets left out) before it is validated
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


# --------------------------------------------------------------------------------------------- helpers


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _roles(values: Any) -> frozenset[Any]:
    return parse_roles(values)


def _client_in_path(request: web.Request) -> ClientId:
    text = request.match_info["client_id"]
    if text.count(":") == 2:
        return MemberId.parse_encoded_id(text)
    if text.count(":") == 3:
        return SubsystemId.parse_encoded_id(text)
    raise IdentifierError(
        f"client identifier {text[:80]!r} in the path must be INSTANCE:CLASS:MEMBER or "
        "INSTANCE:CLASS:MEMBER:SUBSYSTEM"
    )


def _service_in_path(request: web.Request) -> ServiceId:
    return ServiceId.parse_encoded_id(request.match_info["service_id"])


def _group_in_path(request: web.Request) -> LocalGroupId:
    return LocalGroupId(code=request.match_info["code"])


def _client_json(c: ClientInfo) -> dict[str, Any]:
    return {
        "id": str(c.id), "encoded_id": c.id.encoded_id(), "type": c.id.object_type, "status": c.status,
        "is_auth": c.is_auth, "body_logging": c.body_logging, "is_cert_fingerprints": sorted(c.is_cert_fingerprints),
    }


def _service_json(s: ServiceInfo) -> dict[str, Any]:
    return {
        "id": str(s.id), "encoded_id": s.id.encoded_id(), "url": s.url, "timeout_seconds": s.timeout_seconds,
        "openapi_url": s.openapi_url, "enabled": s.enabled, "disabled_notice": s.disabled_notice,
        "endpoints": [{"method": e.method, "path": e.path} for e in s.endpoints],
    }


def _rule_json(r: AccessRule) -> dict[str, Any]:
    return {"service": str(r.service), "subject": subject_text(r.subject), "method": r.endpoint.method,
            "path": r.endpoint.path}


def _user_json(u: UserInfo) -> dict[str, Any]:
    return {"username": u.username, "roles": [r for r in ROLES if r in u.roles], "created_at": _iso(u.created_at),
            "failed_logins": u.failed_logins, "locked_until": _iso(u.locked_until)}


def _api_key_json(k: ApiKeyInfo) -> dict[str, Any]:
    return {"id": k.id, "name": k.name, "roles": [r for r in ROLES if r in k.roles], "created_by": k.created_by,
            "created_at": _iso(k.created_at), "revoked_at": _iso(k.revoked_at)}


def _page(request: web.Request, items: list[Any]) -> dict[str, Any]:
    page = parse_page(request.query)
    chunk, total = paginate(items, page)
    return page_body(list(chunk), total=total, page=page)


def _query_endpoint(request: web.Request) -> Endpoint:
    return Endpoint(method=request.query.get("method", "*"), path=request.query.get("path", "**"))


# -------------------------------------------------------------------------------------- session, meta


async def get_open_api(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return build_document()


async def login(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    username, password = call.body["username"], call.body["password"]
    call.auth = "password"
    call.actor = username if username and len(username) <= 64 else "-"
    s = ctx.settings
    user = await ctx.store.login(
        username, password, now=ctx.clock(), max_failures=s.max_failed_logins, base_seconds=s.lockout_seconds,
        max_seconds=s.max_lockout_seconds,
    )
    key = await ctx.store.signing_key(now=ctx.clock())
    token, claims = auth.issue_token(key, username=user.username, roles=user.roles, policy=ctx.token_policy,
                                     now=ctx.clock())
    call.details["kid"] = key.kid
    call.details["token_id"] = claims.token_id
    return {"token": token, "token_type": "Bearer", "expires_at": _iso(claims.expires_at),
            "roles": [r for r in ROLES if r in user.roles]}


def _session(call: Call) -> auth.Principal:
    p = call.principal
    if p is None or p.kind != "jwt" or p.token_id is None or p.expires_at is None:
        raise RequestError("this operation needs a session token (log in); an API key cannot do it")
    return p


async def logout(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    p = _session(call)
    assert p.token_id is not None and p.expires_at is not None
    await ctx.store.revoke_token(p.token_id, expires_at=p.expires_at, now=ctx.clock())
    return None


async def get_me(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    p = call.principal
    assert p is not None
    return {"name": p.name, "kind": p.kind, "roles": [r for r in ROLES if r in p.roles],
            "expires_at": _iso(p.expires_at)}


async def change_own_password(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    p = _session(call)
    s = ctx.settings
    await ctx.store.login(p.name, call.body["current_password"], now=ctx.clock(), max_failures=s.max_failed_logins,
                          base_seconds=s.lockout_seconds, max_seconds=s.max_lockout_seconds)
    await ctx.store.set_password(p.name, call.body["new_password"], now=ctx.clock())
    return None


# -------------------------------------------------------------------------------------- users, keys


async def list_users(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return _page(request, [_user_json(u) for u in await ctx.store.list_users()])


async def add_user(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    b = call.body
    return _user_json(await ctx.store.add_user(b["username"], b["password"], _roles(b["roles"]), now=ctx.clock()))


async def get_user(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return _user_json(await ctx.store.get_user(request.match_info["username"]))


async def set_user_password(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.store.set_password(request.match_info["username"], call.body["password"], now=ctx.clock())


async def set_user_roles(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return _user_json(await ctx.store.set_roles(request.match_info["username"], _roles(call.body["roles"])))


async def unlock_user(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.store.unlock(request.match_info["username"])


async def remove_user(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.store.remove_user(request.match_info["username"])


async def list_api_keys(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return _page(request, [_api_key_json(k) for k in await ctx.store.list_api_keys()])


async def create_api_key(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    info, key = await ctx.store.create_api_key(
        call.body["name"], _roles(call.body["roles"]), created_by=call.actor, now=ctx.clock()
    )
    call.details["api_key_id"] = info.id
    return {**_api_key_json(info), "key": key}


async def revoke_api_key(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.store.revoke_api_key(request.match_info["key_id"], by=call.actor, now=ctx.clock())


async def list_session_keys(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    keys = await ctx.store.session_keys()
    active = auth.active_key(keys)
    return _page(request, [
        {"kid": k.kid, "created_at": _iso(k.created_at), "retired_at": _iso(k.retired_at),
         "active": active is not None and k.kid == active.kid}
        for k in keys
    ])


async def rotate_session_key(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    key = await ctx.store.rotate_session_key(now=ctx.clock(), ttl_seconds=ctx.settings.session_ttl_seconds)
    call.details["kid"] = key.kid
    return {"kid": key.kid, "created_at": _iso(key.created_at), "retired_at": None, "active": True}


async def list_audit_log(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    page = parse_page(request.query)
    q = request.query
    result = q.get("result")
    if result is not None and result not in ("success", "refused", "failed"):
        raise RequestError(f"query parameter result={result[:20]!r} is not success, refused or failed")
    entries, total = await ctx.store.list_audit(page, actor=q.get("actor"), action=q.get("action"), result=result)
    return page_body([e.to_dict() for e in entries], total=total, page=page)


# -------------------------------------------------------------------------------------------- clients


async def _changed(ctx: AdminContext) -> None:
    await ctx.reload_serverconf()


async def list_clients(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return _page(request, [_client_json(c) for c in await ctx.serverconf.list_clients()])


async def add_client(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    b = call.body
    info = await ctx.serverconf.add_client(
        parse_client(b["id"], encoded=False), status=b.get("status", "saved"), is_auth=b.get("is_auth", "https-cert"),
        body_logging=b.get("body_logging", True),
    )
    await _changed(ctx)
    return _client_json(info)


async def get_client(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return _client_json(await ctx.serverconf.get_client(_client_in_path(request)))


async def update_client(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    info = await ctx.serverconf.update_client(
        _client_in_path(request), is_auth=call.body.get("is_auth"), body_logging=call.body.get("body_logging"),
    )
    await _changed(ctx)
    return _client_json(info)


async def set_client_status(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    info = await ctx.serverconf.update_client(_client_in_path(request), status=call.body["status"])
    await _changed(ctx)
    return _client_json(info)


async def remove_client(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.serverconf.remove_client(_client_in_path(request))
    await _changed(ctx)


async def add_is_cert(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    fp = await ctx.serverconf.add_is_cert(_client_in_path(request), call.body["pem"].encode("utf-8"))
    call.details["fingerprint"] = fp
    await _changed(ctx)
    return {"fingerprint": fp}


async def remove_is_cert(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.serverconf.remove_is_cert(_client_in_path(request), request.match_info["fingerprint"])
    await _changed(ctx)


# ------------------------------------------------------------------------------------------- services


async def list_services(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    provider_text = request.query.get("provider")
    provider = None if provider_text is None else SubsystemId.parse(provider_text, encoded=False)
    return _page(request, [_service_json(s) for s in await ctx.serverconf.list_services(provider=provider)])


async def add_service(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    b = call.body
    info = await ctx.serverconf.add_service(
        ServiceId.parse(b["id"], encoded=False), url=b["url"], timeout_seconds=b.get("timeout_seconds", 60.0),
        openapi_url=b.get("openapi_url"), enabled=b.get("enabled", True), disabled_notice=b.get("disabled_notice", ""),
        endpoints_=[Endpoint(method=e["method"], path=e["path"]) for e in b.get("endpoints", ())],
    )
    await _changed(ctx)
    return _service_json(info)


async def get_service(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return _service_json(await ctx.serverconf.get_service(_service_in_path(request)))


async def update_service(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    b = call.body
    info = await ctx.serverconf.update_service(
        _service_in_path(request), url=b.get("url"), timeout_seconds=b.get("timeout_seconds"),
        openapi_url=b.get("openapi_url"), enabled=b.get("enabled"), disabled_notice=b.get("disabled_notice"),
    )
    await _changed(ctx)
    return _service_json(info)


async def remove_service(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.serverconf.remove_service(_service_in_path(request))
    await _changed(ctx)


async def add_endpoint(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    endpoint = Endpoint(method=call.body["method"], path=call.body["path"])
    await ctx.serverconf.add_endpoint(_service_in_path(request), endpoint)
    await _changed(ctx)
    return {"method": endpoint.method, "path": endpoint.path}


async def remove_endpoint(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.serverconf.remove_endpoint(_service_in_path(request), _query_endpoint(request))
    await _changed(ctx)


async def list_access_rights(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    rules = await ctx.serverconf.list_rules(service=_service_in_path(request))
    return _page(request, [_rule_json(r) for r in rules])


async def grant_access(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    b = call.body
    rule = AccessRule(
        subject=parse_subject(b["subject"]), service=_service_in_path(request),
        endpoint=Endpoint(method=b.get("method", "*"), path=b.get("path", "**")),
    )
    await ctx.serverconf.grant(rule)
    await _changed(ctx)
    return _rule_json(rule)


async def revoke_access(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    subject = request.query.get("subject")
    if subject is None:
        raise RequestError("query parameter subject is required")
    rule = AccessRule(subject=parse_subject(subject), service=_service_in_path(request),
                      endpoint=_query_endpoint(request))
    await ctx.serverconf.revoke(rule)
    await _changed(ctx)


# --------------------------------------------------------------------------------------- local groups


def _group_json(group: LocalGroupId, members: frozenset[ClientId]) -> dict[str, Any]:
    return {"code": group.code, "members": sorted(str(m) for m in members)}


async def _group(ctx: AdminContext, group: LocalGroupId) -> dict[str, Any]:
    groups = await ctx.serverconf.list_groups()
    return _group_json(group, groups.get(group, frozenset()))


async def list_local_groups(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    groups = await ctx.serverconf.list_groups()
    return _page(request, [_group_json(g, m) for g, m in groups.items()])


async def add_local_group(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    group = LocalGroupId(code=call.body["code"])
    await ctx.serverconf.add_group(group, description=call.body.get("description", ""))
    await _changed(ctx)
    return _group_json(group, frozenset())


async def remove_local_group(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.serverconf.remove_group(_group_in_path(request))
    await _changed(ctx)


async def add_local_group_member(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    group = _group_in_path(request)
    await ctx.serverconf.add_group_member(group, parse_client(call.body["client"], encoded=False))
    await _changed(ctx)
    return await _group(ctx, group)


async def remove_local_group_member(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    await ctx.serverconf.remove_group_member(_group_in_path(request), _client_in_path(request))
    await _changed(ctx)


# -------------------------------------------------------------------------- global configuration, log


async def get_global_conf_status(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return ctx.globalconf.status().to_dict()


async def refresh_global_conf(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    r = await ctx.globalconf.refresh()
    call.details["refresh"] = {"accepted": r.accepted, "changed": r.changed, "version": r.version}
    return {"accepted": r.accepted, "changed": r.changed, "version": r.version, "url": r.url, "errors": list(r.errors)}


def _origin(request: web.Request, ctx: AdminContext) -> str:
    origin = request.query.get("origin", ctx.origin)
    if not origin or len(origin) > MAX_ORIGIN_LENGTH or not all(0x21 <= ord(c) <= 0x7E for c in origin):
        raise RequestError(f"origin {origin[:80]!r} must be 1-{MAX_ORIGIN_LENGTH} printable ASCII characters")
    return origin


async def list_message_log_records(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    page = parse_page(request.query)
    origin = _origin(request, ctx)
    total = await ctx.messagelog.size(origin)
    found = await ctx.messagelog.read(origin, start=page.offset, limit=page.limit) if page.offset < total else []
    call.details["records"] = [r.seq for r in found][:1000]
    items = [
        {"origin": r.origin, "seq": r.seq, "leaf_hash": r.leaf_hash.hex(), "record": json.loads(r.encoded)}
        for r in found
    ]
    return page_body(items, total=total, page=page)


async def export_message_log_record(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    raw = request.match_info["seq"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise RequestError(f"record sequence number {raw[:20]!r} is not a non-negative integer")
    seq, origin = int(raw), _origin(request, ctx)
    found = await ctx.messagelog.read(origin, start=seq, limit=1)
    if not found or found[0].seq != seq:
        raise RequestError(f"origin {origin!r} has no record {seq}", code="Client.NotFound", status=404)
    return web.Response(body=found[0].encoded, content_type="application/json",
                        headers={"X-Leaf-Hash": found[0].leaf_hash.hex()})


# ----------------------------------------------------------------------------------------- token


def _token(ctx: AdminContext) -> SoftToken:
    if ctx.token is None:
        raise RequestError("this security server keeps its keys in files, not in a software token",
                           code="Client.NotFound", status=404, hint="see [server] token_dir in docs/tokens.md")
    return ctx.token


def _pin_error(e: RequestError) -> RequestError:
    """A wrong PIN is the token's 401; on the admin API 401 means "log in again", so it is a 400 here."""
    return RequestError(e.message, code=e.xroad_type, status=400) if e.status == 401 else e


def _cert_json(c: CertEntry) -> dict[str, Any]:
    return {"sha256": c.sha256, "kind": c.kind, "identity": c.identity, "not_before": _iso(c.not_before),
            "not_after": _iso(c.not_after), "state": c.state, "imported_at": _iso(c.imported_at), "pem": c.pem}


def _key_json(k: KeyEntry) -> dict[str, Any]:
    return {"id": k.id, "usage": k.usage, "key_type": k.key_type, "label": k.label, "created_at": _iso(k.created_at),
            "certs": [_cert_json(c) for c in k.certs]}


async def get_token(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    token = _token(ctx)
    state = await token.state()
    return {"logged_in": token.logged_in, "failed_pins": state.lockout.failures,
            "locked_until": _iso(state.lockout.locked_until), "keys": [_key_json(k) for k in state.keys]}


async def login_token(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    try:
        await _token(ctx).login(call.body["pin"], now=ctx.clock())
    except RequestError as e:
        raise _pin_error(e) from e


async def logout_token(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    _token(ctx).logout()


async def change_token_pin(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    try:
        await _token(ctx).change_pin(call.body["old_pin"], call.body["new_pin"], now=ctx.clock())
    except RequestError as e:
        raise _pin_error(e) from e


async def generate_key(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    b = call.body
    entry = await _token(ctx).generate_key(b["usage"], key_type=b.get("key_type", "ec-p256"),
                                           label=b.get("label", ""), now=ctx.clock())
    call.details["key_id"] = entry.id
    return _key_json(entry)


async def delete_key(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    entry = await _token(ctx).delete_key(request.match_info["token_key_id"])
    call.details["key_id"] = entry.id


async def create_csr(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    member_text = call.body.get("member")
    member = None if member_text is None else MemberId.parse(member_text, encoded=False)
    csr = await _token(ctx).csr(request.match_info["token_key_id"], server_id=ctx.server_id, member=member,
                                name=call.body.get("name"))
    return {"csr": csr.public_bytes(Encoding.PEM).decode("ascii")}


async def import_certificate(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    token = _token(ctx)
    members = [MemberId.parse(m, encoded=False) for m in call.body.get("members", ())]
    conf = ctx.globalconf.current
    if conf is None:
        raise RequestError("no global configuration yet: the certificate's CA cannot be checked", status=409,
                           code="Client.Conflict")
    try:
        entry = await token.import_cert(call.body["pem"].encode("utf-8"), server_id=ctx.server_id,
                                        ca_for=conf.ca_for, members=members, now=ctx.clock())
    except TrustError as e:  # a certificate that does not meet the rules is the caller's input
        raise RequestError(e.message, code=e.xroad_type, status=400) from e
    call.details["sha256"] = entry.sha256
    return _cert_json(entry)


async def _switch(call: Call, ctx: AdminContext, entry: CertEntry) -> dict[str, Any]:
    changed, error = False, None
    if ctx.reload_keys is not None:
        try:
            changed = await ctx.reload_keys()
        except (ConfigError, TrustError) as e:
            error = e.message
    call.details.update({"sha256": entry.sha256, "keys_changed": changed, "reload_error": error})
    return {"certificate": _cert_json(entry), "keys_changed": changed, "reload_error": error}


async def activate_certificate(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return await _switch(call, ctx, await _token(ctx).activate(request.match_info["sha256"]))


async def deactivate_certificate(call: Call, request: web.Request, ctx: AdminContext) -> Any:
    return await _switch(call, ctx, await _token(ctx).deactivate(request.match_info["sha256"]))


HANDLERS: dict[str, Impl] = {
    "getOpenApi": get_open_api, "login": login, "logout": logout, "getMe": get_me,
    "changeOwnPassword": change_own_password,
    "listUsers": list_users, "addUser": add_user, "getUser": get_user, "setUserPassword": set_user_password,
    "setUserRoles": set_user_roles, "unlockUser": unlock_user, "removeUser": remove_user,
    "listApiKeys": list_api_keys, "createApiKey": create_api_key, "revokeApiKey": revoke_api_key,
    "listSessionKeys": list_session_keys, "rotateSessionKey": rotate_session_key, "listAuditLog": list_audit_log,
    "listClients": list_clients, "addClient": add_client, "getClient": get_client, "updateClient": update_client,
    "setClientStatus": set_client_status, "removeClient": remove_client, "addIsCert": add_is_cert,
    "removeIsCert": remove_is_cert,
    "listServices": list_services, "addService": add_service, "getService": get_service,
    "updateService": update_service, "removeService": remove_service, "addEndpoint": add_endpoint,
    "removeEndpoint": remove_endpoint,
    "listAccessRights": list_access_rights, "grantAccess": grant_access, "revokeAccess": revoke_access,
    "listLocalGroups": list_local_groups, "addLocalGroup": add_local_group, "removeLocalGroup": remove_local_group,
    "addLocalGroupMember": add_local_group_member, "removeLocalGroupMember": remove_local_group_member,
    "getToken": get_token, "loginToken": login_token, "logoutToken": logout_token,
    "changeTokenPin": change_token_pin, "generateKey": generate_key, "deleteKey": delete_key,
    "createCsr": create_csr, "importCertificate": import_certificate,
    "activateCertificate": activate_certificate, "deactivateCertificate": deactivate_certificate,
    "getGlobalConfStatus": get_global_conf_status, "refreshGlobalConf": refresh_global_conf,
    "listMessageLogRecords": list_message_log_records, "exportMessageLogRecord": export_message_log_record,
    **LOG_HANDLERS,  # checkpoints, proofs and archives for auditors (gateway.admin.logapi)
}


def build_admin_app(ctx: AdminContext) -> web.Application:
    """The admin application: every route of the table, one middleware.

    Raises:
        RuntimeError: the route table and the handlers disagree (a bug, caught by any test).
    """
    missing = {r.operation_id for r in ROUTES} ^ set(HANDLERS)
    if missing:
        raise RuntimeError(f"admin routes and handlers disagree: {sorted(missing)}")
    app = web.Application(middlewares=[admin_middleware], client_max_size=ctx.settings.max_body_bytes)
    app[CONTEXT] = ctx
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _wrap(route, HANDLERS[route.operation_id]))
    return app


__all__ = ["CONTEXT", "HANDLERS", "AdminContext", "build_admin_app"]
