"""The steps before every page of a web interface: the session, the CSRF check, the form (I/O).

:class:`PageGuard` is the one implementation of these steps, for both web interfaces (the security server's,
:data:`page` below, and the central server's, :mod:`gateway.admin.central.web`); each gives it its session
cookie's name, its admin API context, how it makes its signed-in user, and how it answers a refusal. A guarded
page handler runs, in order,

1. the session cookie is checked with the admin API's own session-token rules
   (:func:`gateway.admin.middleware.authenticate_session`); without a valid session a GET is sent to the
   log-in page (303) and a POST is answered 401 with the log-in page, saying why;
2. a POST carries the session's CSRF token in ``_csrf`` (:mod:`gateway.admin.web.session`), else it is refused
   with 403 and a page that says so, before the form is read any further;
3. the handler runs with the signed-in user and the form's fields; a
   :class:`~gateway.errors.GatewayError` it raises is answered as a whole-page refusal.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from aiohttp import web
from yarl import URL

from gateway.admin import auth
from gateway.admin.context import CALL, ApiContext
from gateway.admin.middleware import authenticate_session
from gateway.admin.web import session
from gateway.admin.web.nav import nav_for
from gateway.admin.web.ops import UNREAD, User, context, note_error
from gateway.admin.web.render import redirect, render
from gateway.errors import Forbidden, GatewayError, PayloadTooLarge, RequestError

Form = Mapping[str, str]
U = TypeVar("U")
Handler = Callable[[web.Request, U, Form], Awaitable[web.StreamResponse]]
PageHandler = Handler[User]
LOGIN_PATH = "/ui/login"


async def read_form(request: web.Request, *, limit: int | None = None) -> dict[str, str]:
    """The fields of a POSTed form (the last value of each name), bounded as API bodies are
    (``limit``, default ``[admin] max_body_bytes`` of the security server's context).

    Raises:
        RequestError: 413 above the bound; 400 if it is not a URL-encoded or multipart form.
    """
    if request.method != "POST":
        return {}
    if limit is None:
        limit = context(request).settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"form of {request.content_length} bytes is larger than {limit} bytes")
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise RequestError(f"a form must be sent as application/x-www-form-urlencoded, not "
                           f"{request.content_type[:60]!r}")
    try:
        data = await request.post()
    except web.HTTPRequestEntityTooLarge as e:  # a body without Content-Length, cut by aiohttp at the bound
        raise PayloadTooLarge(f"form is larger than {limit} bytes") from e
    return {k: v for k, v in data.items() if isinstance(v, str)}


def login_redirect(request: web.Request, reason: str | None = None) -> web.Response:
    """303 to the log-in page, which comes back to this page afterwards."""
    query = {"next": request.path_qs[:512], **({"reason": reason} if reason else {})}
    return redirect(str(URL(LOGIN_PATH).with_query(query)))


@dataclass(frozen=True, slots=True, kw_only=True)
class PageGuard(Generic[U]):
    """Steps (1)-(3) above for one web interface.

    ``cookie``: the session cookie's name; ``api``: the admin API context of the request (its session rules
    and form bound); ``user``: the signed-in user from the principal and the session's CSRF token;
    ``refuse``: the whole-page refusal (the user is None before step 1 has passed); ``login_again``: the
    log-in page answered (401) to a POST whose session is no longer valid, saying why.
    """

    cookie: str
    api: Callable[[web.Request], ApiContext]
    user: Callable[[web.Request, auth.Principal, str], U]
    refuse: Callable[[web.Request, U | None, GatewayError], web.Response]
    login_again: Callable[[web.Request, str], web.Response]

    def __call__(self, handler: Handler[U]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """``handler`` behind steps (1)-(3)."""

        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            ctx = self.api(request)
            call = request[CALL]
            # (1) the session
            token = request.cookies.get(self.cookie)
            if not token:
                if request.method == "GET":
                    return login_redirect(request)
                return self.refuse(request, None, Forbidden("this form needs a session: log in first"))
            try:
                principal = await authenticate_session(token, ctx, call)
            except RequestError as e:
                if request.method == "GET":
                    return login_redirect(request, e.message)
                note_error(request, e)
                return self.login_again(request, e.message)
            call.principal, call.actor = principal, principal.name
            user = self.user(request, principal, session.csrf_token(token))
            # (2) the CSRF token of a POST, before anything else is read or done
            form: dict[str, str] = {}
            if request.method == "POST":
                request[UNREAD] = request.clone()
                try:
                    form = await read_form(request, limit=ctx.settings.max_body_bytes)
                except RequestError as e:
                    return self.refuse(request, user, e)
                if not session.csrf_matches(form.get(session.CSRF_FIELD), session.csrf_token(token)):
                    call.action = f"web form {request.path[:40]}"
                    return self.refuse(request, user, Forbidden(
                        "this form was refused: it did not carry the anti-forgery (CSRF) token of your session",
                        hint="reload the page and send the form again",
                    ))
            # (3) the page
            try:
                return await handler(request, user, form)
            except GatewayError as e:
                return self.refuse(request, user, e)

        return wrapped


def refusal(request: web.Request, user: User | None, e: GatewayError) -> web.Response:
    """A whole-page refusal of the security server's pages (no form to show it beside): what, in words, and
    the X-Road type."""
    note_error(request, e)
    nav = None if user is None else nav_for(user, "")
    return render("refused.html", status=e.status, user=user, nav=nav, error=e,
                  title="Refused" if e.status == 403 else "Cannot do that")


def _login_again(request: web.Request, reason: str) -> web.Response:
    return render("login.html", status=401, user=None, nav=None, reason=reason, next=request.path, login_csrf="",
                  error=None, username="")


page: PageGuard[User] = PageGuard(
    cookie=session.SESSION_COOKIE, api=context,
    user=lambda request, principal, csrf: User(principal=principal, csrf=csrf),
    refuse=refusal, login_again=_login_again,
)
"""The security server's pages: ``@page`` before a page handler ``(request, user, form)``."""


__all__ = ["Form", "PageGuard", "PageHandler", "login_redirect", "page", "read_form", "refusal"]
