"""Pages of the admin users, API keys and the audit log (I/O). A new API key is shown once, on the page that
answers its creation, and never again (the API stores only its digest)."""

from __future__ import annotations

from aiohttp import web

from gateway.admin.roles import ROLES
from gateway.admin.schema import MAX_LIMIT, parse_page
from gateway.admin.web.guard import Form, page
from gateway.admin.web.nav import nav_for
from gateway.admin.web.ops import FormError, User, note_error, run_op
from gateway.admin.web.pages_config import back
from gateway.admin.web.render import Column, Table, render, table
from gateway.errors import GatewayError

USER_FIELDS = {"username": "User name", "password": "Password", "roles": "Roles"}
KEY_FIELDS = {"name": "Name", "roles": "Roles"}
USERS = "/ui/users"


def _roles(request_form: Form, prefix: str) -> list[str]:
    return [r for r in ROLES if request_form.get(f"{prefix}{r}") == "true"]


async def _users_page(request: web.Request, user: User, err: FormError | None = None, status: int = 200,
                      new_key: dict[str, object] | None = None) -> web.Response:
    users = await run_op(request, user, "listUsers", query={"limit": str(MAX_LIMIT)})
    keys = await run_op(request, user, "listApiKeys", query={"limit": str(MAX_LIMIT)})
    ut = table(request, users["items"], (
        Column(key="username", label="User name"), Column(key="roles", label="Roles", sortable=False),
        Column(key="created_at", label="Created"), Column(key="failed_logins", label="Wrong passwords"),
        Column(key="locked_until", label="Locked until"),
    ), caption="Users", default_sort="username", total=users["total"])
    kt = Table(columns=(Column(key="id", label="Id", sortable=False), Column(key="name", label="Name", sortable=False),
                        Column(key="roles", label="Roles", sortable=False),
                        Column(key="created_at", label="Created", sortable=False),
                        Column(key="revoked_at", label="Revoked", sortable=False),
                        Column(key="revoke", label="Revoke", sortable=False)),
               rows=keys["items"], total=keys["total"], page=parse_page({"limit": str(MAX_LIMIT)}), sort=None,
               descending=False, base=request.rel_url, caption="API keys")
    return render("users.html", status=status, user=user, nav=nav_for(user, "users"), title="Users and API keys",
                  ut=ut, kt=kt, err=err, done=request.query.get("done"), roles=ROLES, new_key=new_key)


@page
async def users(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    return await _users_page(request, user)


@page
async def add_user(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    body = {"username": form.get("username", "").strip(), "password": form.get("password", ""),
            "roles": _roles(form, "role-")}
    try:
        await run_op(request, user, "addUser", body)
    except GatewayError as e:
        note_error(request, e)
        shown = {k: v for k, v in form.items() if k != "password"}
        return await _users_page(request, user, FormError.of("user", e, shown, USER_FIELDS), e.status)
    return back(request, f"User {body['username']} added.", path=USERS)


@page
async def create_api_key(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    body = {"name": form.get("name", "").strip(), "roles": _roles(form, "role-")}
    try:
        created = await run_op(request, user, "createApiKey", body)
    except GatewayError as e:
        note_error(request, e)
        return await _users_page(request, user, FormError.of("apikey", e, form, KEY_FIELDS), e.status)
    return await _users_page(request, user, status=201, new_key=created)


@page
async def revoke_api_key(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    try:
        await run_op(request, user, "revokeApiKey")
    except GatewayError as e:
        note_error(request, e)
        return await _users_page(request, user, FormError.of("revoke", e, form, {}), e.status)
    return back(request, f"API key {request.match_info['key_id']} revoked.", path=USERS)


AUDIT_FILTERS = ("actor", "action", "result")


@page
async def audit_log(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    q = request.query
    query = {k: q[k].strip() for k in (*AUDIT_FILTERS, "limit", "offset") if q.get(k, "").strip()}
    query.setdefault("limit", "50")
    err = None
    status = 200
    try:
        listed = await run_op(request, user, "listAuditLog", query=query)
    except GatewayError as e:
        if e.status == 403:
            raise
        note_error(request, e)
        err, status = FormError.of("audit", e, q, {}), e.status
        listed = {"items": [], "total": 0, "limit": 50, "offset": 0}
    # paged by the API itself (newest first), so the count is of every entry that matches
    t = Table(columns=tuple(Column(key=k, label=label, sortable=False) for k, label in (
        ("id", "No."), ("at", "Time"), ("actor", "Actor"), ("auth", "Auth"), ("remote", "From"),
        ("action", "Action"), ("result", "Result"), ("status", "Status"), ("error", "Error"))),
        rows=listed["items"], total=listed["total"],
        page=parse_page({"limit": str(listed["limit"]), "offset": str(listed["offset"])}), sort=None,
        descending=True, base=request.rel_url, caption="Audit entries, newest first")
    return render("audit.html", status=status, user=user, nav=nav_for(user, "audit"), title="Audit log", t=t,
                  err=err, q=q, results=("success", "refused", "failed"))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/users", users)
    app.router.add_post("/users", add_user)
    app.router.add_post("/api-keys", create_api_key)
    app.router.add_post("/api-keys/{key_id}/revoke", revoke_api_key)
    app.router.add_get("/audit-log", audit_log)


__all__ = ["add_routes"]
