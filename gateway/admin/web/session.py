"""The web interface's session cookie and anti-forgery (CSRF) tokens (pure).

- The **session cookie** ``gw_session`` holds the session token (JWT) that the admin API's login issues; it is
  checked by :func:`gateway.admin.middleware.authenticate_session`, so expiry, logout (revocation), password
  changes and current roles apply exactly as for ``Authorization: Bearer``. It is ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/ui``, ``Secure`` when the page was served over TLS, and lives as long as the
  token (``[admin] session_ttl_seconds``).
- The **CSRF token** of a session is ``SHA-256("gateway-web-csrf" || 0x00 || session token)`` in hex: only a
  holder of the cookie can know it (the session token is in no log, unlike its id), every worker derives the
  same one, and it dies with the session. Every form carries it in the hidden field ``_csrf``; a POST whose
  field is missing or different is refused with 403 before anything else happens.
- The **log-in form** has no session yet: it is protected by a double-submit token, a random value set in the
  cookie ``gw_login_csrf`` (``SameSite=Strict``) when the form is shown and repeated in the form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SESSION_COOKIE = "gw_session"
LOGIN_CSRF_COOKIE = "gw_login_csrf"
CSRF_FIELD = "_csrf"
COOKIE_PATH = "/ui"
_CSRF_DOMAIN = b"gateway-web-csrf\x00"


def csrf_token(session_token: str) -> str:
    """The CSRF token of the session whose cookie holds ``session_token``."""
    return hashlib.sha256(_CSRF_DOMAIN + session_token.encode("utf-8")).hexdigest()


def csrf_matches(presented: str | None, expected: str) -> bool:
    """Whether a form's ``_csrf`` field is the expected token (constant-time comparison)."""
    return presented is not None and hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def new_login_csrf() -> str:
    """A fresh double-submit value for the log-in form (256 bits)."""
    return secrets.token_urlsafe(32)


def cookie_options(*, secure: bool, max_age: int | None) -> dict[str, object]:
    """The attributes of every cookie the web interface sets."""
    options: dict[str, object] = {"httponly": True, "samesite": "Strict", "path": COOKIE_PATH, "secure": secure}
    if max_age is not None:
        options["max_age"] = max_age
    return options


__all__ = [
    "COOKIE_PATH", "CSRF_FIELD", "LOGIN_CSRF_COOKIE", "SESSION_COOKIE", "cookie_options", "csrf_matches",
    "csrf_token", "new_login_csrf",
]
