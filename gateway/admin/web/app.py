"""The web interface as an aiohttp sub-application, mounted at ``/ui`` on the admin port (I/O).

:func:`build_web_app` makes it; :func:`gateway.admin.app.build_admin_app` mounts it, so the admin
middleware (audit entry, the correlation id) wraps every page as it wraps every API call. The pages:

=====================  ==========================================================================
``/ui/login``          log-in form (user name, password); ``POST /ui/logout`` ends the session
``/ui/dashboard``      global configuration, token, certificates with expiry and OCSP, timestamping, exchanges
``/ui/clients``        hosted members and subsystems; one client: IS authentication, IS certificates, removal
``/ui/services``       services, also from an OpenAPI description; one: URL, timeout, enabled, endpoints, rights
``/ui/local-groups``   local groups and their members
``/ui/keys``           the tokens: log-in and out, PIN, keys, CSRs, certificate import, (de)activation
``/ui/messagelog``     auditors: search, a record with its signature and inclusion proof, archives, archive jobs
``/ui/users``          admin users and API keys; one user: roles, password, lock-out, removal
``/ui/account``        one's own account and password
``/ui/audit-log``      the audit log, filtered and paged
=====================  ==========================================================================
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.admin.context import CONTEXT, AdminContext, Impl
from gateway.admin.web import pages_admin, pages_config, pages_keys, pages_log, session
from gateway.admin.web.guard import Form, page, read_form
from gateway.admin.web.nav import nav_for
from gateway.admin.web.ops import HANDLERS_KEY, FormError, User, context, note_error, run_op
from gateway.admin.web.render import STATIC, redirect, render
from gateway.errors import Forbidden, GatewayError, MethodNotAllowed, NotFound
from gateway.messagelog.search import records_since

PREFIX = "/ui"


def _safe_next(target: str | None) -> str:
    """Where to go after the log-in: a page of this interface only (no open redirect)."""
    if target and target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/dashboard"


def _secure(request: web.Request) -> bool:
    """Whether cookies get the Secure attribute: over TLS, or with ``[admin] secure_cookies``."""
    return request.secure or context(request).settings.secure_cookies


async def login_page(request: web.Request) -> web.StreamResponse:
    value = session.new_login_csrf()
    response = render("login.html", user=None, nav=None, reason=request.query.get("reason"),
                      next=_safe_next(request.query.get("next")), login_csrf=value, error=None, username="")
    response.set_cookie(session.LOGIN_CSRF_COOKIE, value, **session.cookie_options(  # type: ignore[arg-type]
        secure=_secure(request), max_age=None))
    return response


async def login(request: web.Request) -> web.StreamResponse:
    """The log-in form: the double-submit check, then the API's own login (lock-out, audit)."""
    ctx = context(request)
    form = await read_form(request)
    username = form.get("username", "")
    expected = request.cookies.get(session.LOGIN_CSRF_COOKIE)
    if not expected or not session.csrf_matches(form.get(session.CSRF_FIELD), expected):
        e = Forbidden("the log-in form was refused: it did not carry its anti-forgery (CSRF) token",
                      hint="open the log-in page again and send the form from there")
        note_error(request, e)
        return render("refused.html", status=403, user=None, nav=None, error=e, title="Refused")
    try:
        result = await run_op(request, None, "login", {"username": username, "password": form.get("password", "")})
    except GatewayError as e:
        note_error(request, e)
        value = session.new_login_csrf()
        response = render(
            "login.html", status=e.status, user=None, nav=None, reason=None, next=_safe_next(form.get("next")),
            login_csrf=value, username=username,
            error=FormError.of("login", e, form, {"username": "User name", "password": "Password"}),
        )
        response.set_cookie(session.LOGIN_CSRF_COOKIE, value, **session.cookie_options(  # type: ignore[arg-type]
            secure=_secure(request), max_age=None))
        return response
    response = redirect(_safe_next(form.get("next")))
    response.set_cookie(session.SESSION_COOKIE, result["token"], **session.cookie_options(  # type: ignore[arg-type]
        secure=_secure(request), max_age=ctx.settings.session_ttl_seconds))
    response.del_cookie(session.LOGIN_CSRF_COOKIE, path=session.COOKIE_PATH)
    return response


@page
async def logout(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    await run_op(request, user, "logout")
    response = redirect(f"{PREFIX}/login?reason=You+have+logged+out.")
    response.del_cookie(session.SESSION_COOKIE, path=session.COOKIE_PATH)
    return response


async def index(request: web.Request) -> web.StreamResponse:
    return redirect(f"{PREFIX}/dashboard")


async def _timestamping(ctx: AdminContext, now: datetime) -> dict[str, Any]:
    latest = await ctx.messagelog.latest_checkpoint(ctx.origin)
    stamped = await ctx.messagelog.latest_checkpoint(ctx.origin, stamped_only=True)
    out: dict[str, Any] = {"records": await ctx.messagelog.size(ctx.origin), "latest": latest, "stamped": stamped,
                           "grace_seconds": None, "unstamped_since": None, "state": "unknown",
                           "last_hour": await records_since(ctx.messagelog, ctx.origin, now - timedelta(hours=1))}
    cp = ctx.checkpointer
    if cp is not None:
        since = cp.unstamped_since
        grace = cp.grace.total_seconds()
        out.update(grace_seconds=grace, unstamped_since=since)
        if since is None:
            out["state"] = "ok: every record is covered by a timestamped checkpoint"
        elif (now - since).total_seconds() > grace:
            out["state"] = "failed: past the grace period, exchanges are refused"
        else:
            left = grace - (now - since).total_seconds()
            out["state"] = f"waiting: records unstamped since {since:%H:%M:%S} UTC, {int(left)} s of grace left"
    return out


async def _exchanges(request: web.Request, user: User, now: datetime) -> dict[str, Any]:
    """Exchanges of the last hour from the operational-monitoring records (``listOpMonRecords``): per side,
    how many went through and how many failed with an X-Road fault; and the latest failures."""
    since = (now - timedelta(hours=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    counts: dict[str, dict[str, int]] = {}
    for side in ("client", "server"):
        for outcome in ("ok", "failed"):
            found = await run_op(request, user, "listOpMonRecords",
                                 query={"from": since, "side": side, "outcome": outcome, "limit": "1"})
            counts.setdefault(side, {})[outcome] = found["total"]
    failed = await run_op(request, user, "listOpMonRecords", query={"from": since, "outcome": "failed", "limit": "5"})
    return {"counts": counts, "failures": failed["items"], "failed_total": failed["total"], "since": since,
            "recorded": context(request).opmon is not None}


@page
async def dashboard(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    ctx = context(request)
    now = ctx.clock()
    values: dict[str, Any] = {"globalconf": None, "token": None, "certificates": None, "timestamping": None,
                              "readiness": None, "exchanges": None}
    if user.may("getGlobalConfStatus"):
        if ctx.readiness is not None:  # the checks of /readyz on the ops port (docs/operations.md section 8)
            values["readiness"] = list(await ctx.readiness())
        status = await run_op(request, user, "getGlobalConfStatus")
        issued = status.get("issued_at")
        age = None if issued is None else (now - datetime.fromisoformat(issued.replace("Z", "+00:00"))
                                           .astimezone(UTC)).total_seconds()
        values["globalconf"] = {**status, "age_seconds": age}
    if user.may("getToken"):
        if ctx.token is not None:
            values["token"] = await run_op(request, user, "getToken")
        if ctx.certificates is not None:
            values["certificates"] = await ctx.certificates()
        values["timestamping"] = await _timestamping(ctx, now)
    if user.may("listOpMonRecords"):
        values["exchanges"] = await _exchanges(request, user, now)
    return render("dashboard.html", user=user, nav=nav_for(user, "dashboard"), now=now, server=str(ctx.server_id),
                  **values)


@web.middleware
async def html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No such page, or a method a page does not take: an HTML page saying so (the admin middleware would
    answer JSON), with the API's error types."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status not in (404, 405):
            raise
        error = NotFound(f"there is no page {request.path[:200]}") if e.status == 404 else MethodNotAllowed(
            f"{request.path[:200]} does not take {request.method}")
        note_error(request, error)
        return render("refused.html", status=error.status, user=None, nav=None, error=error, title="No such page")


def build_web_app(ctx: AdminContext, handlers: dict[str, Impl]) -> web.Application:
    """The web interface on ``ctx``, running the API operations in ``handlers`` (the API's own table)."""
    app = web.Application(middlewares=[html_errors])
    app[CONTEXT] = ctx
    app[HANDLERS_KEY] = handlers
    app.router.add_get("/", index)
    app.router.add_get("/login", login_page, name="login")
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/dashboard", dashboard)
    for module in (pages_config, pages_keys, pages_log, pages_admin):
        module.add_routes(app)
    app.router.add_static("/static", STATIC)
    return app


__all__ = ["PREFIX", "build_web_app"]
