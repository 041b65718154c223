"""Pages of the admin users, API keys and the audit log (I/O). A new API key is shown once, on the page that
answers its creation, and never again (the API stores only its digest)."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from gateway.admin.roles import ROLES
from gateway.admin.schema import MAX_LIMIT
from gateway.admin.web import audit
from gateway.admin.web.confirm import ask, confirmed
from gateway.admin.web.guard import Form, page
from gateway.admin.web.nav import nav_for
from gateway.admin.web.ops import FormError, User, authorize, note_error, run_op
from gateway.admin.web.pages_config import back
from gateway.admin.web.render import Column, redirect, render, table
from gateway.admin.web.session import COOKIE_PATH, SESSION_COOKIE
from gateway.errors import GatewayError, RequestError

USER_FIELDS = {"username": "User name", "password": "Password", "roles": "Roles"}
KEY_FIELDS = {"name": "Name", "roles": "Roles"}
USERS = "/ui/users"
PASSWORD_FIELDS = {"password": "New password", "repeat": "New password again"}
OWN_PASSWORD_FIELDS = {"current_password": "Current password", "new_password": "New password",
                       "repeat": "New password again"}
ACCOUNT = "/ui/account"


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
    kt = table(request, keys["items"], (
        Column(key="id", label="Id"), Column(key="name", label="Name"),
        Column(key="roles", label="Roles", sortable=False), Column(key="created_at", label="Created"),
        Column(key="revoked_at", label="Revoked"), Column(key="revoke", label="Revoke", sortable=False),
    ), caption="API keys", default_sort="id", total=keys["total"], prefix="k")
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


async def _user_page(request: web.Request, user: User, err: FormError | None = None,
                     status: int = 200) -> web.Response:
    shown = await run_op(request, user, "getUser")
    return render("user.html", status=status, user=user, nav=nav_for(user, "users"),
                  title=f"User {shown['username']}", shown=shown, err=err, done=request.query.get("done"),
                  roles=ROLES, base=f"{USERS}/{quote(shown['username'], safe='')}")


@page
async def user_page(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    return await _user_page(request, user)


def _user_path(request: web.Request) -> str:
    return f"{USERS}/{quote(request.match_info['username'], safe='')}"


def _repeated(request: web.Request, form: Form, name: str) -> RequestError | None:
    """The refusal when the new password was not typed the same twice (checked before anything is sent)."""
    if form.get("repeat", "") == form.get(name, ""):
        return None
    e = RequestError("body.repeat is not the same as the new password")
    note_error(request, e)
    return e


@page
async def set_roles(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    try:
        await run_op(request, user, "setUserRoles", {"roles": _roles(form, "role-")})
    except GatewayError as e:
        note_error(request, e)
        return await _user_page(request, user, FormError.of("roles", e, form, USER_FIELDS, only="roles"), e.status)
    return back(request, "Roles changed: they apply from the user's next request.", path=_user_path(request))


@page
async def set_password(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    e: GatewayError | None = _repeated(request, form, "password")
    if e is None:
        try:
            await run_op(request, user, "setUserPassword", {"password": form.get("password", "")})
        except GatewayError as refused:
            note_error(request, refused)
            e = refused
    if e is not None:
        return await _user_page(request, user, FormError.of("password", e, {}, PASSWORD_FIELDS, only="password"),
                                e.status)
    return back(request, "Password set: the user's sessions have ended.", path=_user_path(request))


@page
async def unlock(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    await run_op(request, user, "unlockUser")
    return back(request, "Lock-out cleared.", path=_user_path(request))


@page
async def remove_user(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    name = request.match_info["username"]
    authorize(request, user, "removeUser")
    if not confirmed(form):
        return ask(request, user, question=f"Remove user {name}?",
                   consequence="The user's sessions end at once; API keys are not users and stay.",
                   button="Remove user", cancel=_user_path(request), nav="users")
    await run_op(request, user, "removeUser")
    return back(request, f"User {name} removed.", path=USERS)


async def _account_page(request: web.Request, user: User, err: FormError | None = None,
                        status: int = 200) -> web.Response:
    me = await run_op(request, user, "getMe")
    return render("account.html", status=status, user=user, nav=nav_for(user, "account"), title="Your account",
                  me=me, err=err)


@page
async def account(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    return await _account_page(request, user)


@page
async def change_own_password(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    """``changeOwnPassword``; it ends every session of the user, this one too, so the browser is sent to the
    log-in page."""
    e: GatewayError | None = _repeated(request, form, "new_password")
    if e is None:
        body = {"current_password": form.get("current_password", ""), "new_password": form.get("new_password", "")}
        try:
            await run_op(request, user, "changeOwnPassword", body)
        except GatewayError as refused:
            note_error(request, refused)
            e = refused
    if e is not None:
        err = FormError.of("own", e, {}, OWN_PASSWORD_FIELDS, only="current_password")
        return await _account_page(request, user, err, e.status)
    response = redirect("/ui/login?reason=Your+password+was+changed%3A+log+in+with+the+new+one.")
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


@page
async def revoke_api_key(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    try:
        await run_op(request, user, "revokeApiKey")
    except GatewayError as e:
        note_error(request, e)
        return await _users_page(request, user, FormError.of("revoke", e, form, {}), e.status)
    return back(request, f"API key {request.match_info['key_id']} revoked.", path=USERS)


@page
async def audit_log(request: web.Request, user: User, form: Form) -> web.StreamResponse:
    err, status = None, 200
    try:
        t = await audit.audit_table(request, lambda query: run_op(request, user, "listAuditLog", query=query))
    except GatewayError as e:
        if e.status == 403:
            raise
        note_error(request, e)
        err, status = FormError.of("audit", e, request.query, {}), e.status
        t = audit.empty(request)
    return render("audit.html", status=status, user=user, nav=nav_for(user, "audit"), title="Audit log", t=t,
                  err=err, q=request.query)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/users", users)
    app.router.add_post("/users", add_user)
    app.router.add_get("/users/{username}", user_page)
    app.router.add_post("/users/{username}/roles", set_roles)
    app.router.add_post("/users/{username}/password", set_password)
    app.router.add_post("/users/{username}/unlock", unlock)
    app.router.add_post("/users/{username}/remove", remove_user)
    app.router.add_get("/account", account)
    app.router.add_post("/account/password", change_own_password)
    app.router.add_post("/api-keys", create_api_key)
    app.router.add_post("/api-keys/{key_id}/revoke", revoke_api_key)
    app.router.add_get("/audit-log", audit_log)


__all__ = ["add_routes"]
