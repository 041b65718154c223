"""The steps before every page of the web interface: the session, the CSRF check, the form (I/O).

:func:`page` wraps a page handler so that, in order,

1. the session cookie is checked with the admin API's own session-token rules
   (:func:`gateway.admin.middleware.authenticate_session`); without a valid session a GET is sent to the
   log-in page (303) and a POST is answered 401 with the log-in page, saying why;
2. a POST carries the session's CSRF token in ``_csrf`` (:mod:`gateway.admin.web.session`), else it is refused
   with 403 and a page that says so, before the form is read any further;
3. the handler runs with the signed-in :class:`~gateway.admin.web.ops.User` and the form's fields.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from gateway.admin.context import CALL
from gateway.admin.middleware import authenticate_session
from gateway.admin.web import session
from gateway.admin.web.nav import nav_for
from gateway.admin.web.ops import UNREAD, User, context, note_error
from gateway.admin.web.render import redirect, render
from gateway.errors import Forbidden, GatewayError, PayloadTooLarge, RequestError

Form = Mapping[str, str]
PageHandler = Callable[[web.Request, User, Form], Awaitable[web.StreamResponse]]


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
    return redirect(str(request.app.router["login"].url_for().with_query(query)))


def refusal(request: web.Request, user: User | None, e: GatewayError) -> web.Response:
    """A whole-page refusal (no form to show it beside): what, in words, and the X-Road type."""
    note_error(request, e)
    nav = None if user is None else nav_for(user, "")
    return render("refused.html", status=e.status, user=user, nav=nav, error=e,
                  title="Refused" if e.status == 403 else "Cannot do that")


def page(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``handler`` behind steps (1)-(3) above."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        ctx = context(request)
        call = request[CALL]
        # (1) the session
        token = request.cookies.get(session.SESSION_COOKIE)
        if not token:
            if request.method == "GET":
                return login_redirect(request)
            return refusal(request, None, Forbidden("this form needs a session: log in first"))
        try:
            principal = await authenticate_session(token, ctx, call)
        except RequestError as e:
            if request.method == "GET":
                return login_redirect(request, e.message)
            note_error(request, e)
            return render("login.html", status=401, user=None, nav=None, reason=e.message, next=request.path,
                          login_csrf="", error=None, username="")
        call.principal, call.actor = principal, principal.name
        user = User(principal=principal, csrf=session.csrf_token(token))
        # (2) the CSRF token of a POST, before anything else is read or done
        form: dict[str, str] = {}
        if request.method == "POST":
            request[UNREAD] = request.clone()
            try:
                form = await read_form(request)
            except RequestError as e:
                return refusal(request, user, e)
            if not session.csrf_matches(form.get(session.CSRF_FIELD), user.csrf):
                call.action = f"web form {request.path[:40]}"
                return refusal(request, user, Forbidden(
                    "this form was refused: it did not carry the anti-forgery (CSRF) token of your session",
                    hint="reload the page and send the form again",
                ))
        # (3) the page
        try:
            return await handler(request, user, form)
        except GatewayError as e:
            return refusal(request, user, e)

    return wrapped


__all__ = ["Form", "PageHandler", "login_redirect", "page", "read_form", "refusal"]
