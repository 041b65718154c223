"""Confirmation of a removal before it is done, without JavaScript (I/O).

A remove button posts its form without the field ``confirm``; :func:`ask` then answers a page that says what
will be removed, with a form that posts the same action again with ``confirm=yes`` (and the session's CSRF
token), and a link back. Only that second post runs the API operation.
"""

from __future__ import annotations

from aiohttp import web

from gateway.admin.web.guard import Form
from gateway.admin.web.nav import nav_for
from gateway.admin.web.ops import User
from gateway.admin.web.render import render

CONFIRM_FIELD = "confirm"


def confirmed(form: Form) -> bool:
    """Whether the form is the confirming second post."""
    return form.get(CONFIRM_FIELD) == "yes"


def ask(
    request: web.Request, user: User, *, question: str, consequence: str, button: str, cancel: str, nav: str
) -> web.Response:
    """The page asking ``question``; its form posts this request's path and query again, confirmed."""
    return render(
        "confirm.html",
        user=user,
        nav=nav_for(user, nav),
        title="Confirm the removal",
        question=question,
        consequence=consequence,
        button=button,
        action=request.path_qs,
        cancel=cancel,
    )


__all__ = ["CONFIRM_FIELD", "ask", "confirmed"]
