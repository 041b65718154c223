"""The web interface's pure pieces: CSRF tokens, cookie attributes, times, the log-in's redirect target, form
fields and errors placed beside their field (gateway/admin/web/)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.admin.web import session
from gateway.admin.web.app import _safe_next
from gateway.admin.web.ops import FormError, form_int, form_number
from gateway.admin.web.pages_log import form_time
from gateway.admin.web.render import show_age, show_time
from gateway.errors import Forbidden, IdentifierError, RequestError


def test_csrf_token_is_per_session_and_compared_exactly() -> None:
    a, b = session.csrf_token("token-a"), session.csrf_token("token-b")
    assert a != b and len(a) == 64 and a == session.csrf_token("token-a")
    assert session.csrf_matches(a, a)
    assert not session.csrf_matches(None, a) and not session.csrf_matches("", a) and not session.csrf_matches(b, a)
    assert session.new_login_csrf() != session.new_login_csrf()


def test_cookie_options() -> None:
    assert session.cookie_options(secure=False, max_age=900) == {
        "httponly": True, "samesite": "Strict", "path": "/ui", "secure": False, "max_age": 900}
    assert session.cookie_options(secure=True, max_age=None)["secure"] is True


@pytest.mark.parametrize(("value", "shown"), [
    (datetime(2026, 12, 2, 14, 50, 19, tzinfo=UTC), "2026-12-02 14:50:19 UTC"),
    (datetime(2026, 12, 2, 16, 50, 19, tzinfo=timezone(timedelta(hours=2))), "2026-12-02 14:50:19 UTC"),
    (datetime(2026, 12, 2, 14, 50, 19), "2026-12-02 14:50:19 UTC"),  # stored naive: UTC
    ("2026-12-02T14:50:19Z", "2026-12-02 14:50:19 UTC"),
    ("not a time", "not a time"), (None, "—"), ("", "—"),
])
def test_times_are_shown_in_utc_with_the_zone(value: object, shown: str) -> None:
    assert show_time(value) == shown


@pytest.mark.parametrize(("seconds", "shown"), [
    (42, "42 s"), (600, "10 min"), (3 * 3600 + 300, "3 h 5 min"), (2 * 86400 + 4 * 3600, "2 d 4 h"),
    (-30, "30 s ago"), (None, "—"),
])
def test_durations_in_words(seconds: float | None, shown: str) -> None:
    assert show_age(seconds) == shown


@pytest.mark.parametrize(("target", "lands"), [
    ("/ui/clients?sort=id", "/ui/clients?sort=id"), (None, "/ui/dashboard"), ("", "/ui/dashboard"),
    ("//evil.example/ui/", "/ui/dashboard"), ("https://evil.example/ui/", "/ui/dashboard"),
    ("/api/v1/users", "/ui/dashboard"), ("/ui\\..\\x", "/ui/dashboard"), ("/uix/", "/ui/dashboard"),
])
def test_the_log_in_goes_back_only_to_a_page_of_the_interface(target: str | None, lands: str) -> None:
    assert _safe_next(target) == lands


def test_form_numbers_and_times() -> None:
    assert form_int({"n": " 12 "}, "n") == 12 and form_int({}, "n") is None
    assert form_number({"t": "1.5"}, "t") == 1.5 and form_number({"t": ""}, "t") is None
    with pytest.raises(RequestError, match=r"body.n '-3' is not a whole number"):
        form_int({"n": "-3"}, "n")
    with pytest.raises(RequestError, match=r"body.t 'soon' is not a number"):
        form_number({"t": "soon"}, "t")
    assert form_time({"from": "2026-12-02T14:50"}, "from") == datetime(2026, 12, 2, 14, 50, tzinfo=UTC)
    assert form_time({"from": "2026-12-02T16:50+02:00"}, "from") == datetime(2026, 12, 2, 14, 50, tzinfo=UTC)
    assert form_time({}, "from") is None
    with pytest.raises(RequestError, match="is not a time such as"):
        form_time({"from": "yesterday"}, "from")


@pytest.mark.parametrize(("error", "field", "message"), [
    (RequestError("body.url is longer than 2048 characters"), "url", "URL is longer than 2048 characters"),
    (RequestError("body.other is not a known field"), None, "body.other is not a known field"),
    (IdentifierError("client identifier 'DEV' is not valid"), "id", "client identifier 'DEV' is not valid"),
    (RequestError("no such thing", hint="try again"), None, "no such thing (try again)"),
])
def test_an_error_goes_beside_the_field_it_names(error: RequestError, field: str | None, message: str) -> None:
    err = FormError.of("add", error, {"url": "x"}, {"url": "URL", "id": "Identifier"}, identifier="id")
    assert (err.form, err.field, err.message, err.xroad_type) == ("add", field, message, error.xroad_type)
    assert err.values == {"url": "x"}


def test_secrets_are_never_kept_for_the_form_shown_again() -> None:
    err = FormError.of("login", RequestError("wrong"), {"username": "a", "password": "p", "pin": "1", "_csrf": "c"},
                       {"username": "User name"})
    assert err.values == {"username": "a"}


def test_every_error_of_a_one_field_form_goes_beside_that_field() -> None:
    err = FormError.of("pin", RequestError("PIN is incorrect"), {}, {"pin": "PIN"}, only="pin")
    assert (err.field, err.message) == ("pin", "PIN is incorrect")


def test_a_refused_role_is_said_on_the_page() -> None:
    err = FormError.of("add", Forbidden("obs may not call addClient"), {}, {"id": "Identifier"})
    assert (err.form, err.field, err.xroad_type) == ("page", None, "Client.Forbidden")
