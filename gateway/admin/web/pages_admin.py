"""Pages of the admin users, API keys, one's own account and the audit log (I/O), the same on both servers.

:class:`AccountPages` holds them for one web interface: the security server's (:data:`SECURITY_SERVER`, from
:func:`add_routes`) and the central server's (:mod:`gateway.admin.central.web`) each give it how they run an
API operation, check a role, guard a page and what every page of theirs shows. The operations are the
shared account operations of both admin APIs (:func:`gateway.admin.routes.account_routes`). A new API key is
shown once, on the page that answers its creation, and never again (the API stores only its digest).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

from aiohttp import web

from gateway.admin.roles import ROLES, Role
from gateway.admin.schema import MAX_LIMIT
from gateway.admin.web import audit
from gateway.admin.web.confirm import CONFIRM_FIELD
from gateway.admin.web.guard import Form, PageGuard, page
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
U = TypeVar("U")
U_contra = TypeVar("U_contra", contravariant=True)


class Run(Protocol[U_contra]):
    """Runs an API operation for the page's user (:func:`gateway.admin.web.ops.run_op` and its central twin)."""

    def __call__(self, request: web.Request, user: U_contra, operation_id: str, body: Any = None, *,
                 query: Mapping[str, str] | None = None) -> Awaitable[Any]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountPages(Generic[U]):
    """The users, API keys, account and audit-log pages of one web interface.

    ``run``: an operation for the user; ``authorize``: the role check alone (before a removal is confirmed);
    ``guard``: the session and CSRF steps; ``values``: what every page of this interface is rendered with
    (the user, the navigation with the named page current, the product); ``roles``: the roles a user or API
    key of this server may have; ``session_cookie``: ended when one's own password changes.
    """

    run: Run[U]
    authorize: Callable[[web.Request, U, str], None]
    guard: PageGuard[U]
    values: Callable[[web.Request, U, str], dict[str, Any]]
    roles: tuple[Role, ...]
    session_cookie: str

    def _roles(self, form: Form) -> list[str]:
        return [r for r in self.roles if form.get(f"role-{r}") == "true"]

    async def _users_page(self, request: web.Request, user: U, err: FormError | None = None, status: int = 200,
                          new_key: dict[str, object] | None = None) -> web.Response:
        users = await self.run(request, user, "listUsers", query={"limit": str(MAX_LIMIT)})
        keys = await self.run(request, user, "listApiKeys", query={"limit": str(MAX_LIMIT)})
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
        return render("users.html", status=status, title="Users and API keys", ut=ut, kt=kt, err=err,
                      done=request.query.get("done"), roles=self.roles, new_key=new_key,
                      **self.values(request, user, "users"))

    async def users(self, request: web.Request, user: U, form: Form) -> web.StreamResponse:
        return await self._users_page(request, user)

    async def add_user(self, request: web.Request, user: U, form: Form) -> web.StreamResponse:
        body = {"username": form.get("username", "").strip(), "password": form.get("password", ""),
                "roles": self._roles(form)}
        try:
            await self.run(request, user, "addUser", body)
        except GatewayError as e:
            note_error(request, e)
            shown = {k: v for k, v in form.items() if k != "password"}
            return await self._users_page(request, user, FormError.of("user", e, shown, USER_FIELDS), e.status)
        return back(request, f"User {body['username']} added.", path=USERS)

    async def create_api_key(self, request: web.Request, user: U, form: Form) -> web.StreamResponse:
        body = {"name": form.get("name", "").strip(), "roles": self._roles(form)}
        try:
            created = await self.run(request, user, "createApiKey", body)
        except GatewayError as e:
            note_error(request, e)
            return await self._users_page(request, user, FormError.of("apikey", e, form, KEY_FIELDS), e.status)
        return await self._users_page(request, user, status=201, new_key=created)

    async def revoke_api_key(self, request: web.Request, user: U, form: Form) -> web.StreamResponse:
        try:
            await self.run(request, user, "revokeApiKey")
        except GatewayError as e:
            note_error(request, e)
            return await self._users_page(request, user, FormError.of("revoke", e, form, {}), e.status)
        return back(request, f"API key {request.match_info['key_id']} revoked.", path=USERS)

    async def _user_page(self, request: web.Request, user: U, err: FormError | None = None,
                         status: int = 200) -> web.Response:
        shown = await self.run(request, user, "getUser")
        return render("user.html", status=status, title=f"User {shown['username']}", shown=shown, err=err,
                      done=request.query.get("done"), roles=self.roles,
                      base=f"{USERS}/{quote(shown['username'], safe='')}", **self.values(request, user, "users"))

    async def user_page(self, request: web.Request, user: U, form: Form) -> web.StreamResponse:
        return await self._user_page(request, user)

    async def set_roles(self, request: web.Request, user: U, form: Form) -> web.StreamResponse:
        try:
            await self.run(request, user, "setUserRoles", {"roles": self._roles(form)})
        except GatewayError as e:
            note_error(request, e)
            err = FormError.of("roles", e, form, USER_FIELDS, only="roles")
            return await self._user_page(request, user, err, e.status)
        return back(request, "Roles changed: they apply from the user's next request.", path=_user_path(request))

    async def set_password(self, request: web.Request, user: U, form: Form) -> web.StreamResponse:
        e: GatewayError | None = _repeated(request, form, "password")
        if e is None:
            try:
                await self.run(request, user, "setUserPassword", {"password": form.get("password", "")})
            except GatewayError as refused:
                note_error(request, refused)
                e = refused
        if e is not None:
            err = FormError.of("password", e, {}, PASSWORD_FIELDS, only="password")
            return await self._user_page(request, user, err, e.status)
        return back(request, "Password set: the user's sessions have ended.", path=_user_path(request))

    async def unlock(self, request: web.Request, user: U, form: Form) -> web.StreamResponse:
        await self.run(request, user, "unlockUser")
        return back(request, "Lock-out cleared.", path=_user_path(request))

    async def remove_user(self, request: web.Request, user: U, form: Form) -> web.StreamResponse:
        name = request.match_info["username"]
        self.authorize(request, user, "removeUser")
        if form.get(CONFIRM_FIELD) != "yes":
            return render("confirm.html", title="Confirm the removal", question=f"Remove user {name}?",
                          consequence="The user's sessions end at once; API keys are not users and stay.",
                          button="Remove user", action=request.path_qs, cancel=_user_path(request),
                          **self.values(request, user, "users"))
        await self.run(request, user, "removeUser")
        return back(request, f"User {name} removed.", path=USERS)

    async def _account_page(self, request: web.Request, user: U, err: FormError | None = None,
                            status: int = 200) -> web.Response:
        me = await self.run(request, user, "getMe")
        return render("account.html", status=status, title="Your account", me=me, err=err,
                      **self.values(request, user, "account"))

    async def account(self, request: web.Request, user: U, form: Form) -> web.StreamResponse:
        return await self._account_page(request, user)

    async def change_own_password(self, request: web.Request, user: U, form: Form) -> web.StreamResponse:
        """``changeOwnPassword``; it ends every session of the user, this one too, so the browser is sent to
        the log-in page."""
        e: GatewayError | None = _repeated(request, form, "new_password")
        if e is None:
            body = {"current_password": form.get("current_password", ""),
                    "new_password": form.get("new_password", "")}
            try:
                await self.run(request, user, "changeOwnPassword", body)
            except GatewayError as refused:
                note_error(request, refused)
                e = refused
        if e is not None:
            err = FormError.of("own", e, {}, OWN_PASSWORD_FIELDS, only="current_password")
            return await self._account_page(request, user, err, e.status)
        response = redirect("/ui/login?reason=Your+password+was+changed%3A+log+in+with+the+new+one.")
        response.del_cookie(self.session_cookie, path=COOKIE_PATH)
        return response

    async def audit_log(self, request: web.Request, user: U, form: Form) -> web.StreamResponse:
        err, status = None, 200
        try:
            t = await audit.audit_table(request, lambda query: self.run(request, user, "listAuditLog", query=query))
        except GatewayError as e:
            if e.status == 403:
                raise
            note_error(request, e)
            err, status = FormError.of("audit", e, request.query, {}), e.status
            t = audit.empty(request)
        return render("audit.html", status=status, title="Audit log", t=t, err=err, q=request.query,
                      **self.values(request, user, "audit"))

    def add_routes(self, app: web.Application) -> None:
        g, r = self.guard, app.router
        r.add_get("/users", g(self.users))
        r.add_post("/users", g(self.add_user))
        r.add_get("/users/{username}", g(self.user_page))
        r.add_post("/users/{username}/roles", g(self.set_roles))
        r.add_post("/users/{username}/password", g(self.set_password))
        r.add_post("/users/{username}/unlock", g(self.unlock))
        r.add_post("/users/{username}/remove", g(self.remove_user))
        r.add_get("/account", g(self.account))
        r.add_post("/account/password", g(self.change_own_password))
        r.add_post("/api-keys", g(self.create_api_key))
        r.add_post("/api-keys/{key_id}/revoke", g(self.revoke_api_key))
        r.add_get("/audit-log", g(self.audit_log))


def _user_path(request: web.Request) -> str:
    return f"{USERS}/{quote(request.match_info['username'], safe='')}"


def _repeated(request: web.Request, form: Form, name: str) -> RequestError | None:
    """The refusal when the new password was not typed the same twice (checked before anything is sent)."""
    if form.get("repeat", "") == form.get(name, ""):
        return None
    e = RequestError("body.repeat is not the same as the new password")
    note_error(request, e)
    return e


def _authorize(request: web.Request, user: User, operation_id: str) -> None:
    authorize(request, user, operation_id)


SECURITY_SERVER: AccountPages[User] = AccountPages(
    run=run_op, authorize=_authorize, guard=page,
    values=lambda request, user, current: {"user": user, "nav": nav_for(user, current)},
    roles=ROLES, session_cookie=SESSION_COOKIE,
)


def add_routes(app: web.Application) -> None:
    """The security server's account pages."""
    SECURITY_SERVER.add_routes(app)


__all__ = ["SECURITY_SERVER", "AccountPages", "Run", "add_routes"]
