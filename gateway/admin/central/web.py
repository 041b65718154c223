"""The central server's web interface, mounted at ``/ui`` on its admin port (I/O; docs/web-ui.md section 9).

The same stack and rules as the security server's pages (:mod:`gateway.admin.web`): the templates, tables,
times and error placement of :mod:`gateway.admin.web.render` and :class:`gateway.admin.web.ops.FormError`, the
session and CSRF rules of :mod:`gateway.admin.web.session`. Every read and change runs the central admin API's
own operation (:data:`gateway.admin.central.app.HANDLERS`) after the role check and the schema of its route in
:func:`gateway.admin.central.routes.central_api`, and the admin middleware writes the audit entry of every
change and refusal, exactly as for the REST API. Its cookies have names of their own (``gw_central_session``,
``gw_central_login_csrf``): a browser keeps cookies per host, not per port, so a security server's pages on the
same host keep their session.

=================================  ===========================================================================
``/ui/login``                      log-in form; ``POST /ui/logout`` ends the session
``/ui/dashboard``                  overview: counts, submitted requests, the newest published version
``/ui/members``                    members; one member: rename, subsystems (add, remove), remove
``/ui/subsystems``                 every subsystem of every member
``/ui/servers``                    security servers; one server: address, authentication certificates, clients
``/ui/registration-requests``      the queue; one request: its signature (verified), approve, reject
``/ui/global-groups``              global groups; one group: members (add, remove), remove
``/ui/trust-services``             trusted CAs with their OCSP responders, timestamping authorities
``/ui/signing-keys``               configuration-signing keys: generate, activate, retire; the anchor
``/ui/witness-policies``           witness policies; ``?server=ID``: the form that sets (or replaces) one
``/ui/globalconf``                 published configuration versions; publish now
``/ui/users``                       central admin users and API keys; one user: roles, password, lock-out, removal
``/ui/account``                    one's own account and password
``/ui/audit-log``                  the audit log, filtered, sorted and paged
=================================  ===========================================================================
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from yarl import URL

from gateway.admin import auth
from gateway.admin.central.context import CENTRAL_CONTEXT, CentralAdminContext, CentralImpl
from gateway.admin.central.routes import central_api
from gateway.admin.roles import CENTRAL_ROLES
from gateway.admin.routes import Route
from gateway.admin.schema import MAX_LIMIT, parse_page
from gateway.admin.web import session
from gateway.admin.web.app import html_errors
from gateway.admin.web.guard import PageGuard, read_form
from gateway.admin.web.nav import NavItem
from gateway.admin.web.ops import FormError, authorize_route, call_route, note_error
from gateway.admin.web.pages_admin import AccountPages
from gateway.admin.web.render import STATIC, Column, Table, redirect, render, table
from gateway.errors import Forbidden, GatewayError, NotFound, RequestError
from gateway.identifiers import SecurityServerId

PREFIX = "/ui"
SESSION_COOKIE = "gw_central_session"
LOGIN_CSRF_COOKIE = "gw_central_login_csrf"
PRODUCT = {"product": "central server", "brand": "Central server"}
HANDLERS_KEY = web.AppKey("central_web_handlers", dict[str, CentralImpl])
Form = Mapping[str, str]

# (key, label, path, the API operation the page shows; None: every signed-in user)
PAGES: tuple[tuple[str, str, str, str | None], ...] = (
    ("dashboard", "Overview", "/ui/dashboard", None),
    ("members", "Members", "/ui/members", "listMembers"),
    ("subsystems", "Subsystems", "/ui/subsystems", "listMembers"),
    ("servers", "Security servers", "/ui/servers", "listServers"),
    ("requests", "Registration requests", "/ui/registration-requests", "listRegistrationRequests"),
    ("groups", "Global groups", "/ui/global-groups", "listGlobalGroups"),
    ("trust", "Trust services", "/ui/trust-services", "listCas"),
    ("keys", "Signing keys", "/ui/signing-keys", "listSigningKeys"),
    ("witnesses", "Witness policies", "/ui/witness-policies", "listWitnessPolicies"),
    ("versions", "Published versions", "/ui/globalconf", "listGlobalConfVersions"),
    ("users", "Users and API keys", "/ui/users", "listUsers"),
    ("audit", "Audit log", "/ui/audit-log", "listAuditLog"),
    ("account", "Your account", "/ui/account", None),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CentralUser:
    """The signed-in user of a central page: who, the session's CSRF token, and the instance's routes."""

    principal: auth.Principal
    csrf: str
    routes: Mapping[str, Route]

    def may(self, operation_id: str) -> bool:
        """Whether the user's roles allow the operation (the page offers only what it allows)."""
        return bool(self.principal.roles & self.routes[operation_id].roles)


def _ctx(request: web.Request) -> CentralAdminContext:
    return request.app[CENTRAL_CONTEXT]


@functools.cache
def _routes(instance: str) -> dict[str, Route]:
    return {r.operation_id: r for r in central_api(instance).routes}


def nav_for(user: CentralUser, current: str) -> list[NavItem]:
    return [NavItem(key=k, label=label, url=url, current=k == current)
            for k, label, url, op in PAGES if op is None or user.may(op)]


def page_values(request: web.Request, user: CentralUser | None, current: str, **values: Any) -> dict[str, Any]:
    nav = None if user is None else nav_for(user, current)
    return {**PRODUCT, "server": f"instance {_ctx(request).instance}", "user": user, "nav": nav, **values}


async def run(request: web.Request, user: CentralUser | None, operation_id: str, body: Any = None, *,
              query: Mapping[str, str] | None = None) -> Any:
    """The result of the central API operation ``operation_id`` for ``user``: recorded for the audit entry,
    the role check, the body against the route's schema, then the API's handler (as
    :func:`gateway.admin.web.ops.run_op` for the security server).

    Raises:
        RequestError: 401 without a user; 403 if the user's roles do not allow it; 400 if the body breaks the
            route's schema; and whatever the operation itself raises.
    """
    ctx = _ctx(request)
    route = _routes(ctx.instance)[operation_id]
    authorize_route(request, None if user is None else user.principal, route, operation_id, query=query)
    return await call_route(request, route, body, query, request.app[HANDLERS_KEY][operation_id], ctx)


def refusal(request: web.Request, user: CentralUser | None, e: GatewayError) -> web.Response:
    """A whole-page refusal: what, in words, and the X-Road type."""
    note_error(request, e)
    return render("refused.html", status=e.status, error=e, title="Refused" if e.status == 403 else "Cannot do that",
                  **page_values(request, user, ""))


def _login_again(request: web.Request, reason: str) -> web.Response:
    return render("login.html", status=401, reason=reason, next=request.path, login_csrf="", error=None,
                  username="", **page_values(request, None, ""))


page: PageGuard[CentralUser] = PageGuard(
    cookie=SESSION_COOKIE, api=_ctx,
    user=lambda request, principal, csrf: CentralUser(principal=principal, csrf=csrf,
                                                      routes=_routes(_ctx(request).instance)),
    refuse=refusal, login_again=_login_again,
)
"""The central pages: ``@page`` before a page handler ``(request, user, form)``; the steps of
:class:`gateway.admin.web.guard.PageGuard`."""


def back(note: str, path: str) -> web.Response:
    """303 to ``path`` with ``note`` shown there."""
    return redirect(str(URL(path).with_query({"done": note})))


def _safe_next(target: str | None) -> str:
    if target and target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/dashboard"


def _set_login_csrf(request: web.Request, response: web.Response, value: str) -> None:
    secure = request.secure or _ctx(request).settings.secure_cookies
    response.set_cookie(LOGIN_CSRF_COOKIE, value, **session.cookie_options(  # type: ignore[arg-type]
        secure=secure, max_age=None))


# --------------------------------------------------------------------------------------- log-in, overview


async def login_page(request: web.Request) -> web.StreamResponse:
    value = session.new_login_csrf()
    response = render("login.html", reason=request.query.get("reason"), next=_safe_next(request.query.get("next")),
                      login_csrf=value, error=None, username="", title="Log in", **page_values(request, None, ""))
    _set_login_csrf(request, response, value)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    """The log-in form: the double-submit check, then the API's own login (lock-out, audit)."""
    ctx = _ctx(request)
    form = await read_form(request, limit=ctx.settings.max_body_bytes)
    username = form.get("username", "")
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not session.csrf_matches(form.get(session.CSRF_FIELD), expected):
        return refusal(request, None, Forbidden(
            "the log-in form was refused: it did not carry its anti-forgery (CSRF) token",
            hint="open the log-in page again and send the form from there"))
    try:
        result = await run(request, None, "login", {"username": username, "password": form.get("password", "")})
    except GatewayError as e:
        note_error(request, e)
        value = session.new_login_csrf()
        response = render(
            "login.html", status=e.status, reason=None, next=_safe_next(form.get("next")), login_csrf=value,
            username=username, title="Log in", **page_values(request, None, ""),
            error=FormError.of("login", e, form, {"username": "User name", "password": "Password"}),
        )
        _set_login_csrf(request, response, value)
        return response
    response = redirect(_safe_next(form.get("next")))
    secure = request.secure or ctx.settings.secure_cookies
    response.set_cookie(SESSION_COOKIE, result["token"], **session.cookie_options(  # type: ignore[arg-type]
        secure=secure, max_age=ctx.settings.session_ttl_seconds))
    response.del_cookie(LOGIN_CSRF_COOKIE, path=session.COOKIE_PATH)
    return response


@page
async def logout(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    await run(request, user, "logout")
    response = redirect(f"{PREFIX}/login?reason=You+have+logged+out.")
    response.del_cookie(SESSION_COOKIE, path=session.COOKIE_PATH)
    return response


async def index(request: web.Request) -> web.StreamResponse:
    return redirect(f"{PREFIX}/dashboard")


ALL = {"limit": str(MAX_LIMIT)}


@page
async def dashboard(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    counts: dict[str, int] = {}
    for key, op in (("members", "listMembers"), ("servers", "listServers"), ("groups", "listGlobalGroups"),
                    ("cas", "listCas"), ("tsas", "listTsas")):
        if user.may(op):
            counts[key] = (await run(request, user, op, query={"limit": "1"}))["total"]
    keys = (await run(request, user, "listSigningKeys", query=ALL))["items"] if user.may("listSigningKeys") else None
    pending = await run(request, user, "listRegistrationRequests", query={"state": "submitted", **ALL})
    newest = await run(request, user, "listGlobalConfVersions", query={"limit": "1"})
    return render("central/dashboard.html", title="Overview", counts=counts, keys=keys, pending=pending,
                  newest=newest["items"][0] if newest["items"] else None, **page_values(request, user, "dashboard"))


# --------------------------------------------------------------------------------------- forms


async def submit(
    request: web.Request, user: CentralUser, form: Form, *, op: str, body: Any, name: str,
    fields: dict[str, str], done: str, to: str, again: Callable[[FormError, int], Awaitable[web.Response]],
    identifier: str | None = None, only: str | None = None,
) -> web.StreamResponse:
    """Run ``op`` with ``body``; then 303 to ``to`` with ``done``, or the page again (``again``) with the error
    beside the field it concerns."""
    try:
        await run(request, user, op, body)
    except GatewayError as e:
        note_error(request, e)
        return await again(FormError.of(name, e, form, fields, identifier=identifier, only=only), e.status)
    return back(done, to)


def _field(form: Form, name: str) -> str:
    return form.get(name, "").strip()


# --------------------------------------------------------------------------------------- members, subsystems

MEMBER_FIELDS = {"id": "Member identifier", "name": "Name"}


async def _members_page(request: web.Request, user: CentralUser, err: FormError | None = None,
                        status: int = 200) -> web.Response:
    listed = await run(request, user, "listMembers", query=ALL)
    t = table(request, listed["items"], (Column(key="id", label="Member"), Column(key="name", label="Name"),
                                         Column(key="subsystems", label="Subsystems", sortable=False)),
              caption="Members", default_sort="id", total=listed["total"])
    return render("central/members.html", status=status, title="Members", t=t, err=err,
                  done=request.query.get("done"), **page_values(request, user, "members"))


@page
async def members(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await _members_page(request, user)


@page
async def add_member(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    body = {"id": _field(form, "id"), "name": _field(form, "name")}

    async def again(err: FormError, status: int) -> web.Response:
        return await _members_page(request, user, err, status)

    return await submit(request, user, form, op="addMember", body=body, name="add", fields=MEMBER_FIELDS,
                        done=f"Member {body['id']} added.", to="/ui/members", again=again, identifier="id")


def _member_path(request: web.Request) -> str:
    return f"/ui/members/{request.match_info['member_id']}"


async def _member_page(request: web.Request, user: CentralUser, err: FormError | None = None,
                       status: int = 200) -> web.Response:
    member = await run(request, user, "getMember")
    t = table(request, [{"code": code, "id": f"{member['id']}/{code}"} for code in member["subsystems"]],
              (Column(key="code", label="Code"), Column(key="id", label="Identifier"),
               Column(key="remove", label="Remove", sortable=False)),
              caption=f"Subsystems of {member['id']}", default_sort="code")
    return render("central/member.html", status=status, title=f"Member {member['id']}", member=member, t=t,
                  err=err, done=request.query.get("done"), **page_values(request, user, "members"))


@page
async def member(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await _member_page(request, user)


def _again(render_page: Callable[[web.Request, CentralUser, FormError | None, int], Awaitable[web.Response]],
           request: web.Request, user: CentralUser) -> Callable[[FormError, int], Awaitable[web.Response]]:
    async def again(err: FormError, status: int) -> web.Response:
        return await render_page(request, user, err, status)

    return again


@page
async def rename_member(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="renameMember", body={"name": _field(form, "name")}, name="rename",
                        fields={"name": "Name"}, done="Name changed.", to=_member_path(request),
                        again=_again(_member_page, request, user), only="name")


@page
async def remove_member(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="removeMember", body=None, name="remove", fields={},
                        done=f"Member {request.match_info['member_id'].replace(':', '/')} removed.", to="/ui/members",
                        again=_again(_member_page, request, user))


@page
async def add_subsystem(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    code = _field(form, "code")
    return await submit(request, user, form, op="addSubsystem", body={"code": code}, name="subsystem",
                        fields={"code": "Subsystem code"}, done=f"Subsystem {code} added.", to=_member_path(request),
                        again=_again(_member_page, request, user), only="code")


@page
async def remove_subsystem(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="removeSubsystem", body=None, name="remove-subsystem", fields={},
                        done=f"Subsystem {request.match_info['subsystem_code']} removed.", to=_member_path(request),
                        again=_again(_member_page, request, user))


@page
async def subsystems(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    listed = await run(request, user, "listMembers", query=ALL)
    servers = await run(request, user, "listServers", query=ALL) if user.may("listServers") else {"items": []}
    hosted: dict[str, list[str]] = {}
    for s in servers["items"]:
        for c in s["clients"]:
            hosted.setdefault(c, []).append(s["id"])
    rows = [{"id": f"{m['id']}/{code}", "member": m["id"], "member_encoded": m["encoded_id"], "code": code,
             "name": m["name"], "servers": hosted.get(f"{m['id']}/{code}", [])}
            for m in listed["items"] for code in m["subsystems"]]
    t = table(request, rows, (Column(key="id", label="Subsystem"), Column(key="member", label="Member"),
                              Column(key="name", label="Member name"),
                              Column(key="servers", label="Served by", sortable=False)),
              caption="Subsystems", default_sort="id", total=None)
    return render("central/subsystems.html", title="Subsystems", t=t, **page_values(request, user, "subsystems"))


# --------------------------------------------------------------------------------------- security servers

SERVER_FIELDS = {"id": "Server identifier", "address": "Address"}


async def _servers_page(request: web.Request, user: CentralUser, err: FormError | None = None,
                        status: int = 200) -> web.Response:
    listed = await run(request, user, "listServers", query=ALL)
    rows = [{**s, "certs": len(s["auth_certs"])} for s in listed["items"]]
    t = table(request, rows, (Column(key="id", label="Server"), Column(key="address", label="Address"),
                              Column(key="certs", label="Authentication certificates"),
                              Column(key="clients", label="Clients", sortable=False)),
              caption="Security servers", default_sort="id", total=listed["total"])
    return render("central/servers.html", status=status, title="Security servers", t=t, err=err,
                  done=request.query.get("done"), **page_values(request, user, "servers"))


@page
async def servers(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await _servers_page(request, user)


@page
async def add_server(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    body = {"id": _field(form, "id"), "address": _field(form, "address")}
    return await submit(request, user, form, op="addServer", body=body, name="add", fields=SERVER_FIELDS,
                        done=f"Security server {body['id']} added.", to="/ui/servers",
                        again=_again(_servers_page, request, user), identifier="id")


def _server_path(request: web.Request) -> str:
    return f"/ui/servers/{request.match_info['server_id']}"


async def _server_page(request: web.Request, user: CentralUser, err: FormError | None = None,
                       status: int = 200) -> web.Response:
    server = await run(request, user, "getServer")
    # two tables on the page: the certificates' query parameters start with "a", the clients' with "c"
    at = table(request, [{"sha256": sha} for sha in server["auth_certs"]],
               (Column(key="sha256", label="SHA-256"), Column(key="remove", label="Remove", sortable=False)),
               caption="Authentication certificates", default_sort="sha256", prefix="a")
    ct = table(request, [{"client": c} for c in server["clients"]],
               (Column(key="client", label="Member or subsystem"), Column(key="remove", label="Remove",
                                                                          sortable=False)),
               caption="Clients", default_sort="client", prefix="c")
    return render("central/server.html", status=status, title=f"Security server {server['id']}", server_=server,
                  at=at, ct=ct, err=err, done=request.query.get("done"), **page_values(request, user, "servers"))


@page
async def server(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await _server_page(request, user)


@page
async def set_server_address(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="setServerAddress", body={"address": _field(form, "address")},
                        name="address", fields={"address": "Address"}, done="Address changed.",
                        to=_server_path(request), again=_again(_server_page, request, user), only="address")


@page
async def remove_server(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="removeServer", body=None, name="remove", fields={},
                        done=f"Security server {request.match_info['server_id'].replace(':', '/')} removed.",
                        to="/ui/servers", again=_again(_server_page, request, user))


@page
async def add_auth_cert(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="addAuthCert", body={"pem": form.get("pem", "")}, name="cert",
                        fields={"pem": "Certificate (PEM)"}, done="Authentication certificate registered.",
                        to=_server_path(request), again=_again(_server_page, request, user), only="pem")


@page
async def remove_auth_cert(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="removeAuthCert", body=None, name="remove-cert", fields={},
                        done="Authentication certificate removed.", to=_server_path(request),
                        again=_again(_server_page, request, user))


@page
async def add_server_client(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    client = _field(form, "client")
    return await submit(request, user, form, op="addServerClient", body={"client": client}, name="client",
                        fields={"client": "Client"}, done=f"Client {client} added.", to=_server_path(request),
                        again=_again(_server_page, request, user), only="client")


@page
async def remove_server_client(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="removeServerClient", body=None, name="remove-client", fields={},
                        done="Client removed.", to=_server_path(request), again=_again(_server_page, request, user))


# --------------------------------------------------------------------------------------- registration requests

STATES = ("", "submitted", "approved", "rejected")


@page
async def registration_requests(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    state = request.query.get("state", "")
    if state not in STATES:
        raise RequestError(f"state {state[:20]!r} is not one of submitted, approved, rejected")
    query = {**ALL, **({"state": state} if state else {})}
    listed = await run(request, user, "listRegistrationRequests", query=query)
    rows = [{**r, "subject": r["client"] or r["auth_cert_sha256"] or ""} for r in listed["items"]]
    t = table(request, rows, (Column(key="id", label="No."), Column(key="type", label="Type"),
                              Column(key="server", label="Server"),
                              Column(key="subject", label="Client or certificate"),
                              Column(key="state", label="State"), Column(key="created_at", label="Submitted"),
                              Column(key="decided_by", label="Decided by")),
              caption="Registration requests", default_sort="id", default_desc=True, total=listed["total"])
    return render("central/requests.html", title="Registration requests", t=t, state=state, states=STATES,
                  **page_values(request, user, "requests"))


def _request_path(request: web.Request) -> str:
    return f"/ui/registration-requests/{request.match_info['request_id']}"


async def _request_page(request: web.Request, user: CentralUser, err: FormError | None = None,
                        status: int = 200) -> web.Response:
    rec = await run(request, user, "getRegistrationRequest")
    return render("central/request.html", status=status, title=f"Registration request {rec['id']}", rec=rec,
                  err=err, done=request.query.get("done"), **page_values(request, user, "requests"))


@page
async def registration_request(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await _request_page(request, user)


def _decision(form: Form) -> dict[str, str]:
    comment = _field(form, "comment")
    return {"comment": comment} if comment else {}


@page
async def approve_request(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="approveRegistrationRequest", body=_decision(form), name="decide",
                        fields={"comment": "Comment"}, done="Request approved and applied to the registry.",
                        to=_request_path(request), again=_again(_request_page, request, user))


@page
async def reject_request(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="rejectRegistrationRequest", body=_decision(form), name="decide",
                        fields={"comment": "Comment"}, done="Request rejected.", to=_request_path(request),
                        again=_again(_request_page, request, user))


# --------------------------------------------------------------------------------------- global groups

GROUP_FIELDS = {"id": "Group identifier", "description": "Description"}


async def _groups_page(request: web.Request, user: CentralUser, err: FormError | None = None,
                       status: int = 200) -> web.Response:
    listed = await run(request, user, "listGlobalGroups", query=ALL)
    rows = [{**g, "count": len(g["members"])} for g in listed["items"]]
    t = table(request, rows, (Column(key="id", label="Group"), Column(key="description", label="Description"),
                              Column(key="count", label="Members")),
              caption="Global groups", default_sort="id", total=listed["total"])
    return render("central/groups.html", status=status, title="Global groups", t=t, err=err,
                  done=request.query.get("done"), **page_values(request, user, "groups"))


@page
async def groups(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await _groups_page(request, user)


@page
async def add_group(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    body = {"id": _field(form, "id"), "description": _field(form, "description")}
    return await submit(request, user, form, op="addGlobalGroup", body=body, name="add", fields=GROUP_FIELDS,
                        done=f"Global group {body['id']} added.", to="/ui/global-groups",
                        again=_again(_groups_page, request, user), identifier="id")


def _group_path(request: web.Request) -> str:
    return f"/ui/global-groups/{request.match_info['group_id']}"


async def _group_page(request: web.Request, user: CentralUser, err: FormError | None = None,
                      status: int = 200) -> web.Response:
    group_id = request.match_info["group_id"]
    listed = await run(request, user, "listGlobalGroups", query=ALL)
    found = [g for g in listed["items"] if g["encoded_id"] == group_id]
    if not found:
        raise NotFound(f"global group {group_id.replace(':', '/')[:200]} is not registered")
    t = table(request, [{"client": c} for c in found[0]["members"]],
              (Column(key="client", label="Member or subsystem"), Column(key="remove", label="Remove",
                                                                         sortable=False)),
              caption="Members of the group", default_sort="client")
    return render("central/group.html", status=status, title=f"Global group {found[0]['id']}", group=found[0],
                  t=t, err=err, done=request.query.get("done"), **page_values(request, user, "groups"))


@page
async def group(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await _group_page(request, user)


@page
async def remove_group(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="removeGlobalGroup", body=None, name="remove", fields={},
                        done=f"Global group {request.match_info['group_id'].replace(':', '/')} removed.",
                        to="/ui/global-groups", again=_again(_group_page, request, user))


@page
async def add_group_member(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    client = _field(form, "client")
    return await submit(request, user, form, op="addGlobalGroupMember", body={"client": client}, name="member",
                        fields={"client": "Member or subsystem"}, done=f"{client} added to the group.",
                        to=_group_path(request), again=_again(_group_page, request, user), only="client")


@page
async def remove_group_member(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="removeGlobalGroupMember", body=None, name="remove-member",
                        fields={}, done="Removed from the group.", to=_group_path(request),
                        again=_again(_group_page, request, user))


# --------------------------------------------------------------------------------------- trust services

CA_FIELDS = {"name": "Name", "pem": "CA certificate (PEM)", "ocsp_urls": "OCSP responder URLs"}
TSA_FIELDS = {"name": "Name", "url": "URL", "pem": "TSA certificate (PEM)"}
TRUST = "/ui/trust-services"


async def _trust_page(request: web.Request, user: CentralUser, err: FormError | None = None,
                      status: int = 200) -> web.Response:
    cas = await run(request, user, "listCas", query=ALL)
    tsas = await run(request, user, "listTsas", query=ALL)
    ct = table(request, cas["items"], (Column(key="name", label="Name"), Column(key="subject", label="Subject"),
                                       Column(key="not_after", label="Valid until"),
                                       Column(key="ocsp_urls", label="OCSP responders", sortable=False),
                                       Column(key="remove", label="Remove", sortable=False)),
               caption="Certification authorities", default_sort="name", total=cas["total"])
    # TSAs keep their order of preference: paged, not sortable (query parameters starting with "t")
    tt = table(request, tsas["items"], (Column(key="name", label="Name", sortable=False),
                                        Column(key="url", label="URL", sortable=False),
                                        Column(key="sha256", label="Certificate SHA-256", sortable=False),
                                        Column(key="remove", label="Remove", sortable=False)),
               caption="Timestamping authorities, most preferred first", total=tsas["total"], prefix="t")
    return render("central/trust.html", status=status, title="Trust services", ct=ct, tt=tt, err=err,
                  done=request.query.get("done"), **page_values(request, user, "trust"))


@page
async def trust(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await _trust_page(request, user)


@page
async def add_ca(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    body: dict[str, Any] = {"name": _field(form, "name"), "pem": form.get("pem", "")}
    urls = form.get("ocsp_urls", "").split()
    if urls:
        body["ocsp_urls"] = urls
    return await submit(request, user, form, op="addCa", body=body, name="ca", fields=CA_FIELDS,
                        done=f"CA {body['name']} trusted.", to=TRUST, again=_again(_trust_page, request, user))


@page
async def remove_ca(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="removeCa", body=None, name="remove-ca", fields={},
                        done=f"CA {request.match_info['name']} no longer trusted.", to=TRUST,
                        again=_again(_trust_page, request, user))


@page
async def add_tsa(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    body = {"name": _field(form, "name"), "url": _field(form, "url"), "pem": form.get("pem", "")}
    return await submit(request, user, form, op="addTsa", body=body, name="tsa", fields=TSA_FIELDS,
                        done=f"TSA {body['name']} trusted.", to=TRUST, again=_again(_trust_page, request, user))


@page
async def remove_tsa(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="removeTsa", body=None, name="remove-tsa", fields={},
                        done=f"TSA {request.match_info['name']} no longer trusted.", to=TRUST,
                        again=_again(_trust_page, request, user))


# --------------------------------------------------------------------------------------- signing keys

KEYS = "/ui/signing-keys"


async def _keys_page(request: web.Request, user: CentralUser, err: FormError | None = None,
                     status: int = 200) -> web.Response:
    listed = await run(request, user, "listSigningKeys", query=ALL)
    t = table(request, listed["items"], (Column(key="number", label="No."), Column(key="keyid", label="Key id"),
                                         Column(key="state", label="State"), Column(key="created_at", label="Made"),
                                         Column(key="retired_at", label="Retired"),
                                         Column(key="action", label="Action", sortable=False)),
              caption="Configuration-signing keys", default_sort="number", total=listed["total"])
    return render("central/keys.html", status=status, title="Configuration-signing keys", t=t, err=err,
                  done=request.query.get("done"), **page_values(request, user, "keys"))


@page
async def signing_keys(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await _keys_page(request, user)


@page
async def create_signing_key(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="createSigningKey", body=None, name="create", fields={},
                        done="A new signing key was generated, inactive: hand out the new anchor, then activate it.",
                        to=KEYS, again=_again(_keys_page, request, user))


@page
async def activate_signing_key(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="activateSigningKey", body=None, name="key", fields={},
                        done=f"Key {request.match_info['keyid'][:16]} signs from the next publication on.", to=KEYS,
                        again=_again(_keys_page, request, user))


@page
async def retire_signing_key(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="retireSigningKey", body=None, name="key", fields={},
                        done=f"Key {request.match_info['keyid'][:16]} retired.", to=KEYS,
                        again=_again(_keys_page, request, user))


@page
async def anchor(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    document = await run(request, user, "getAnchor")
    name = f"anchor-{_ctx(request).instance}.json"
    return web.Response(text=json.dumps(document, indent=2) + "\n", content_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


# --------------------------------------------------------------------------------------- witness policies

WITNESSES = "/ui/witness-policies"
POLICY_FIELDS = {"server": "Logging security server", "quorum": "Quorum", "witnesses": "Witnesses"}


def _witness_lines(policy: Mapping[str, Any] | None) -> str:
    return "\n".join(f"{w['vkey']},{w['url']},{w['server']}" for w in policy["witnesses"]) if policy else ""


async def _witnesses_page(request: web.Request, user: CentralUser, err: FormError | None = None,
                          status: int = 200) -> web.Response:
    """The policies, and (``?server=ID``, or the server of a refused form) the form that sets one."""
    listed = await run(request, user, "listWitnessPolicies", query=ALL)
    t = table(request, listed["items"], (Column(key="id", label="Logging server"),
                                         Column(key="quorum", label="Quorum"),
                                         Column(key="witnesses", label="Witnesses", sortable=False),
                                         Column(key="action", label="Action", sortable=False)),
              caption="Witness policies", default_sort="id", total=listed["total"])
    chosen: dict[str, str] | None = None
    text = request.match_info.get("server_id") or request.query.get("server", "").strip()
    if text and user.may("setWitnessPolicy"):
        try:
            server = SecurityServerId.parse(text.replace(":", "/"), encoded=False)
        except GatewayError as e:
            note_error(request, e)
            err, status = FormError.of("choose", e, {"server": text}, POLICY_FIELDS, identifier="server"), e.status
        else:
            current = next((p for p in listed["items"] if p["id"] == str(server)), None)
            chosen = {"id": str(server), "encoded_id": server.encoded_id(),
                      "quorum": str(current["quorum"]) if current else "1", "witnesses": _witness_lines(current)}
    return render("central/witnesses.html", status=status, title="Witness policies", t=t, err=err, chosen=chosen,
                  done=request.query.get("done"), **page_values(request, user, "witnesses"))


@page
async def witness_policies(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await _witnesses_page(request, user)


def _policy_body(form: Form) -> dict[str, Any]:
    """The setWitnessPolicy body of the form: one witness a line, ``VKEY,URL,SERVER`` or ``VKEY,SERVER`` (the
    default URL); a vkey has no comma."""
    witnesses: list[dict[str, str]] = []
    for n, line in enumerate((x.strip() for x in form.get("witnesses", "").splitlines()), 1):
        if not line:
            continue
        vkey, sep, rest = line.partition(",")
        url, _, server = rest.rpartition(",")
        if not sep:
            raise RequestError(f"body.witnesses line {n} {line[:80]!r} is not VKEY,URL,SERVER or VKEY,SERVER")
        witness = {"vkey": vkey.strip(), "server": server.strip()}
        witnesses.append({**witness, "url": url.strip()} if url.strip() else witness)
    quorum = _field(form, "quorum")
    return {"quorum": int(quorum) if quorum.isascii() and quorum.isdigit() and len(quorum) < 4 else quorum,
            "witnesses": witnesses}


@page
async def set_witness_policy(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    server = request.match_info["server_id"].replace(":", "/")
    again = _again(_witnesses_page, request, user)
    # the role check first, and the audit entry names the operation even when the form cannot become its body
    authorize_route(request, user.principal, user.routes["setWitnessPolicy"], "setWitnessPolicy")
    try:
        body = _policy_body(form)
    except RequestError as e:
        note_error(request, e)
        return await again(FormError.of("set", e, form, POLICY_FIELDS), e.status)
    return await submit(request, user, form, op="setWitnessPolicy", body=body, name="set", fields=POLICY_FIELDS,
                        done=f"Witness policy of {server[:200]} set: published from the next publication on.",
                        to=WITNESSES, again=again)


@page
async def remove_witness_policy(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    return await submit(request, user, form, op="removeWitnessPolicy", body=None, name="remove", fields={},
                        done=f"Witness policy of {request.match_info['server_id'].replace(':', '/')[:200]} removed.",
                        to=WITNESSES, again=_again(_witnesses_page, request, user))


# --------------------------------------------------------------------------------------- published versions


@page
async def versions(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    q = request.query
    query = {k: q[k] for k in ("limit", "offset") if q.get(k)}
    query.setdefault("limit", "50")
    listed = await run(request, user, "listGlobalConfVersions", query=query)
    # paged by the API (newest first): the caption counts every version
    t = Table(columns=tuple(Column(key=k, label=label, sortable=False) for k, label in (
        ("version", "Version"), ("issued_at", "Issued"), ("expires_at", "Expires"), ("sha256", "SHA-256"))),
        rows=listed["items"], total=listed["total"],
        page=parse_page({"limit": str(listed["limit"]), "offset": str(listed["offset"])}), sort=None,
        descending=True, base=request.rel_url, caption="Published versions, newest first")
    return render("central/versions.html", title="Published configuration versions", t=t,
                  done=request.query.get("done"), err=None, **page_values(request, user, "versions"))


@page
async def publish(request: web.Request, user: CentralUser, form: Form) -> web.StreamResponse:
    try:
        pub = await run(request, user, "publishGlobalConf")
    except GatewayError as e:
        return refusal(request, user, e)
    return back(f"Version {pub['version']} published.", "/ui/globalconf")


# --------------------------------------------------------------------------------------- users, keys, audit log


def _authorize(request: web.Request, user: CentralUser, operation_id: str) -> None:
    authorize_route(request, user.principal, user.routes[operation_id], operation_id)


# the security server's pages of users, API keys, one's account and the audit log, on the central API
ACCOUNTS: AccountPages[CentralUser] = AccountPages(
    run=run, authorize=_authorize, guard=page,
    values=lambda request, user, current: page_values(request, user, current),
    roles=CENTRAL_ROLES, session_cookie=SESSION_COOKIE,
)


# --------------------------------------------------------------------------------------- the application


def build_central_web_app(ctx: CentralAdminContext, handlers: dict[str, CentralImpl]) -> web.Application:
    """The central web interface on ``ctx``, running the API operations in ``handlers`` (the API's own table)."""
    app = web.Application(middlewares=[html_errors])
    app[CENTRAL_CONTEXT] = ctx
    app[HANDLERS_KEY] = handlers
    r = app.router
    r.add_get("/", index)
    r.add_get("/login", login_page)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/dashboard", dashboard)
    r.add_get("/members", members)
    r.add_post("/members", add_member)
    r.add_get("/members/{member_id}", member)
    r.add_post("/members/{member_id}/name", rename_member)
    r.add_post("/members/{member_id}/remove", remove_member)
    r.add_post("/members/{member_id}/subsystems", add_subsystem)
    r.add_post("/members/{member_id}/subsystems/{subsystem_code}/remove", remove_subsystem)
    r.add_get("/subsystems", subsystems)
    r.add_get("/servers", servers)
    r.add_post("/servers", add_server)
    r.add_get("/servers/{server_id}", server)
    r.add_post("/servers/{server_id}/address", set_server_address)
    r.add_post("/servers/{server_id}/remove", remove_server)
    r.add_post("/servers/{server_id}/auth-certs", add_auth_cert)
    r.add_post("/servers/{server_id}/auth-certs/{fingerprint}/remove", remove_auth_cert)
    r.add_post("/servers/{server_id}/clients", add_server_client)
    r.add_post("/servers/{server_id}/clients/{client_id}/remove", remove_server_client)
    r.add_get("/registration-requests", registration_requests)
    r.add_get("/registration-requests/{request_id}", registration_request)
    r.add_post("/registration-requests/{request_id}/approve", approve_request)
    r.add_post("/registration-requests/{request_id}/reject", reject_request)
    r.add_get("/global-groups", groups)
    r.add_post("/global-groups", add_group)
    r.add_get("/global-groups/{group_id}", group)
    r.add_post("/global-groups/{group_id}/remove", remove_group)
    r.add_post("/global-groups/{group_id}/members", add_group_member)
    r.add_post("/global-groups/{group_id}/members/{client_id}/remove", remove_group_member)
    r.add_get("/trust-services", trust)
    r.add_post("/trust-services/cas", add_ca)
    r.add_post("/trust-services/cas/{name}/remove", remove_ca)
    r.add_post("/trust-services/tsas", add_tsa)
    r.add_post("/trust-services/tsas/{name}/remove", remove_tsa)
    r.add_get("/signing-keys", signing_keys)
    r.add_post("/signing-keys", create_signing_key)
    r.add_post("/signing-keys/{keyid}/activate", activate_signing_key)
    r.add_post("/signing-keys/{keyid}/retire", retire_signing_key)
    r.add_get("/signing-keys/anchor", anchor)
    r.add_get("/witness-policies", witness_policies)
    r.add_post("/witness-policies/{server_id}", set_witness_policy)
    r.add_post("/witness-policies/{server_id}/remove", remove_witness_policy)
    r.add_get("/globalconf", versions)
    r.add_post("/globalconf/publish", publish)
    ACCOUNTS.add_routes(app)  # /users, /api-keys, /account, /audit-log
    r.add_static("/static", STATIC)
    return app


__all__ = ["LOGIN_CSRF_COOKIE", "PREFIX", "SESSION_COOKIE", "CentralUser", "build_central_web_app"]
