"""A development OpenID Connect identity provider with a few test citizens (I/O; aiohttp), as the development
PKI stands in for a real CA: ``gateway demo`` runs it so that the citizen portal signs people in through an
ordinary provider.

What it implements (OpenID Connect Core 1.0 and Discovery 1.0, for one public client):

========================================  =================================================================
``/.well-known/openid-configuration``     the discovery document
``/jwks``                                 the signing key (ES256, P-256), as a JWK set
``GET /authorize``                        the authorization request: response_type=code, scope openid, a
                                          registered redirect_uri, state, nonce, PKCE S256; a page to choose
                                          a test citizen or type a subject id
``POST /authorize``                       the choice: a one-time code (60 s) back to the redirect_uri
``POST /token``                           grant_type=authorization_code with the PKCE code_verifier: the
                                          signed ID token (sub, name, iss, aud, nonce, iat, exp)
========================================  =================================================================

It keeps codes in memory only, signs with a key made at start, and asks for no password: it is for a
laptop, never for real people.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from gateway.sockets import listen

CODE_TTL_SECONDS = 60  # seconds a code may wait for its token request
ID_TOKEN_TTL_SECONDS = 600  # seconds an ID token is valid
SUBJECT = re.compile(r"[A-Z]{2}[0-9A-Za-z-]{1,40}")
_CSRF_COOKIE = "idp_csrf"


@dataclass(frozen=True, slots=True, kw_only=True)
class TestCitizen:
    subject: str  # with its country prefix
    name: str


CITIZENS: tuple[TestCitizen, ...] = (
    TestCitizen(subject="EE38001085718", name="Mari Maasikas"),
    TestCitizen(subject="EE49002124277", name="Jaan Tamm"),
    TestCitizen(subject="EE36012310220", name="Kadri Kask"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Code:
    client_id: str
    redirect_uri: str
    subject: str
    name: str
    nonce: str | None
    code_challenge: str
    expires: float


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DevIdentityProvider:
    """The provider's state: its key, its one client, the codes not yet redeemed."""

    def __init__(
        self,
        *,
        clients: dict[str, tuple[str, ...]],
        citizens: tuple[TestCitizen, ...] = CITIZENS,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.key = ECKey.generate_key(
            "P-256", parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "ES256"}, private=True
        )
        self.clients = clients  # client_id -> registered redirect URIs
        self.citizens = citizens
        self.clock = clock
        self.issuer = ""  # set when it listens
        self._codes: dict[str, _Code] = {}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "scopes_supported": ["openid"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "claims_supported": ["sub", "name"],
        }

    def id_token(self, subject: str, name: str, *, client_id: str, nonce: str | None) -> str:
        now = int(self.clock().timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": client_id,
            "name": name,
            "iat": now,
            "exp": now + ID_TOKEN_TTL_SECONDS,
            "auth_time": now,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return jwt.encode({"alg": "ES256", "kid": self.key.kid}, claims, self.key)

    # ---- the authorization request

    def _check_request(self, params: Any) -> tuple[str, str] | str:
        """``(client_id, redirect_uri)``, or the reason the request cannot even be answered by redirect."""
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        if client_id not in self.clients:
            return f"unknown client_id {client_id[:80]!r}"
        if redirect_uri not in self.clients[client_id]:
            return f"redirect_uri {redirect_uri[:200]!r} is not registered for {client_id}"
        return client_id, redirect_uri

    @staticmethod
    def _request_error(params: Any) -> str | None:
        """An OAuth error code for a request that can be answered by redirect (RFC 6749 section 4.1.2.1)."""
        if params.get("response_type") != "code":
            return "unsupported_response_type"
        if "openid" not in params.get("scope", "").split():
            return "invalid_scope"
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return "invalid_request"
        return None

    async def authorize_page(self, request: web.Request) -> web.StreamResponse:
        checked = self._check_request(request.query)
        if isinstance(checked, str):
            return _page("error.html", status=400, message=checked)
        error = self._request_error(request.query)
        if error is not None:
            return _back(checked[1], {"error": error, "state": request.query.get("state", "")})
        csrf = secrets.token_urlsafe(24)
        keep = {
            k: request.query.get(k, "")
            for k in (
                "client_id",
                "redirect_uri",
                "scope",
                "response_type",
                "state",
                "nonce",
                "code_challenge",
                "code_challenge_method",
            )
        }
        response = _page("signin.html", citizens=self.citizens, params=keep, csrf=csrf, error=None)
        response.set_cookie(_CSRF_COOKIE, csrf, httponly=True, samesite="Strict", path="/")
        return response

    async def authorize(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        checked = self._check_request(form)
        if isinstance(checked, str):
            return _page("error.html", status=400, message=checked)
        client_id, redirect_uri = checked
        cookie = request.cookies.get(_CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, str(form.get("_csrf", ""))):
            return _page("error.html", status=403, message="the sign-in form did not carry its CSRF token")
        error = self._request_error(form)
        if error is not None:
            return _back(redirect_uri, {"error": error, "state": str(form.get("state", ""))})
        subject = str(form.get("subject_id") or form.get("subject") or "").strip()
        if not SUBJECT.fullmatch(subject):
            keep = {
                k: str(form.get(k, ""))
                for k in (
                    "client_id",
                    "redirect_uri",
                    "scope",
                    "response_type",
                    "state",
                    "nonce",
                    "code_challenge",
                    "code_challenge_method",
                )
            }
            return _page(
                "signin.html",
                status=400,
                citizens=self.citizens,
                params=keep,
                csrf=cookie,
                error=f"{subject[:40]!r} is not a subject id with a country prefix, e.g. EE38001085718",
            )
        name = next((c.name for c in self.citizens if c.subject == subject), subject)
        code = secrets.token_urlsafe(32)
        self._codes[code] = _Code(
            client_id=client_id,
            redirect_uri=redirect_uri,
            subject=subject,
            name=name,
            nonce=str(form.get("nonce", "")) or None,
            code_challenge=str(form["code_challenge"]),
            expires=time.monotonic() + CODE_TTL_SECONDS,
        )
        return _back(redirect_uri, {"code": code, "state": str(form.get("state", ""))})

    # ---- the token request (RFC 6749 section 4.1.3, RFC 7636 section 4.6)

    async def token(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if form.get("grant_type") != "authorization_code":
            return _token_error("unsupported_grant_type", "grant_type must be authorization_code")
        entry = self._codes.pop(str(form.get("code", "")), None)  # one use, even when the rest is wrong
        if entry is None or entry.expires < time.monotonic():
            return _token_error("invalid_grant", "unknown, used or expired code")
        if form.get("client_id") != entry.client_id or form.get("redirect_uri") != entry.redirect_uri:
            return _token_error("invalid_grant", "client_id or redirect_uri differ from the authorization request")
        verifier = str(form.get("code_verifier", ""))
        if not verifier or not hmac.compare_digest(create_s256_code_challenge(verifier), entry.code_challenge):
            return _token_error("invalid_grant", "the code_verifier does not match the code_challenge (PKCE)")
        token = self.id_token(entry.subject, entry.name, client_id=entry.client_id, nonce=entry.nonce)
        return web.json_response(
            {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": ID_TOKEN_TTL_SECONDS,
                "id_token": token,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def discovery_document(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.discovery())

    async def jwks(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(KeySet([self.key]).as_dict(private=False))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery_document)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/authorize", self.authorize_page)
        app.router.add_post("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        return app


def _page(template: str, *, status: int = 200, **values: Any) -> web.Response:
    return web.Response(
        text=_ENV.get_template(template).render(**values),
        status=status,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
        },
    )


def _back(redirect_uri: str, params: dict[str, str]) -> web.Response:
    sep = "&" if "?" in redirect_uri else "?"
    return web.Response(status=303, headers={"Location": f"{redirect_uri}{sep}{urlencode(params)}"})


def _token_error(error: str, description: str) -> web.Response:
    return web.json_response(
        {"error": error, "error_description": description}, status=400, headers={"Cache-Control": "no-store"}
    )


@dataclass
class RunningIdentityProvider:
    provider: DevIdentityProvider
    runner: web.AppRunner
    url: str

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_identity_provider(
    provider: DevIdentityProvider,
    host: str = "127.0.0.1",
    port: int = 0,
) -> RunningIdentityProvider:
    """Listen on ``host:port`` (0: a free one); the issuer is ``http://host:port``.

    Raises:
        ConfigError: the address is in use.
    """
    sock = listen(host, port, what="the development identity provider")
    provider.issuer = f"http://{host}:{sock.getsockname()[1]}"
    runner = web.AppRunner(provider.app(), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return RunningIdentityProvider(provider=provider, runner=runner, url=provider.issuer)


__all__ = ["CITIZENS", "DevIdentityProvider", "RunningIdentityProvider", "TestCitizen", "start_identity_provider"]
