"""The citizen portal as an aiohttp application (I/O): ``gateway portal serve`` (docs/portal.md).

=====================  ==========================================================================
``/``                  the start page (signed in: to ``/usage``)
``/signin``            starts the sign-in at the OpenID Connect provider (code flow, PKCE, state, nonce)
``/callback``          the provider's answer: the code redeemed, the ID token verified, the session set
``/usage``             every access to the signed-in citizen's data, from ``findUsage`` over the exchange
``/usage/evidence``    the same as the evidence file (JSON) for ``gateway log verify-usage``
``POST /signout``      ends the session
=====================  ==========================================================================

It keeps nothing: no database, no file. The session cookie holds the provider's ID token itself, and each
request verifies it again (signature by the provider's JWKS, issuer, audience, expiry); the citizen is its
``sub`` and nothing else. The sign-in under way is a cookie sealed with a key that lives in memory.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jinja2
from aiohttp import web
from joserfc.jwk import KeySet

from gateway.admin.web.render import STATIC, show_time
from gateway.errors import ConfigError, Forbidden, GatewayError, IdentifierError, PeerError, Unauthorized
from gateway.globalconf.model import GlobalConf, format_time
from gateway.globalconf.transparency import TransparencyConf
from gateway.identifiers import SubsystemId
from gateway.portal import oidc, usage
from gateway.settings import PortalSettings
from gateway.sockets import listen

SESSION_COOKIE = "portal_session"  # the ID token; HttpOnly, SameSite=Strict
SIGNIN_COOKIE = "portal_signin"  # the sign-in under way; HttpOnly, SameSite=Lax (it must come back from the
# provider's redirect, a cross-site navigation when the provider is another site)
SIGNIN_TTL_SECONDS = 600  # seconds a sign-in may take at the provider
CSRF_FIELD = "_csrf"
_CSRF_DOMAIN = b"gateway-portal-csrf\x00"
MAX_ANSWER_BYTES = 8 * 2**20  # bytes of one findUsage answer; a larger one is refused as malformed
MAX_DOCUMENT_BYTES = 2**20  # bytes of the provider's discovery document or JWKS

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["time"] = show_time


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def read_bounded(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The whole body of ``response``, refused once it passes ``limit`` bytes (it is never held in full).

    Raises:
        PeerError: the body is larger than ``limit``.
    """
    data = bytearray()
    async for chunk in response.content.iter_chunked(64 * 2**10):
        data += chunk
        if len(data) > limit:
            raise PeerError(f"{what} is larger than {limit} bytes")
    return bytes(data)


def csrf_token(id_token: str) -> str:
    """The CSRF token of the session whose cookie holds ``id_token`` (as the web interface's)."""
    return hashlib.sha256(_CSRF_DOMAIN + id_token.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """What one subsystem answered to the fan-out."""

    subsystem: str
    usages: tuple[usage.Usage, ...] = ()
    total: int = 0
    error: str | None = None  # why it gave no (complete) answer

    @property
    def truncated(self) -> bool:
        return self.error is None and self.total > len(self.usages)


@dataclass
class Portal:
    """The portal's state, all of it in memory: settings, the provider's documents, the sealing key."""

    settings: PortalSettings
    globalconf: Callable[[], GlobalConf]  # the current, verified global configuration
    verify: usage.Verifier = usage.no_verifier
    clock: Callable[[], datetime] = _utc_now
    client: str = ""  # the portal's subsystem; settings.client, else the global configuration's
    public_url: str = ""
    http: aiohttp.ClientSession | None = None
    _provider: oidc.Provider | None = None
    _keys: KeySet | None = None
    _seal_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}/callback"

    def session(self) -> aiohttp.ClientSession:
        assert self.http is not None, "the portal is not started"
        return self.http

    async def _get(self, url: str, what: str) -> bytes:
        try:
            async with self.session().get(url) as r:
                if r.status != 200:
                    raise PeerError(f"the identity provider answered {r.status} for its {what} ({url})")
                return await read_bounded(r, MAX_DOCUMENT_BYTES, f"the identity provider's {what}")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise PeerError(f"the identity provider cannot be reached for its {what}: {e}") from e

    async def provider(self) -> oidc.Provider:
        if self._provider is None:
            issuer = self.settings.issuer.rstrip("/")
            data = await self._get(f"{issuer}/.well-known/openid-configuration", "discovery document")
            self._provider = oidc.parse_discovery(data, issuer=issuer)
        return self._provider

    async def keys(self, *, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            self._keys = oidc.parse_jwks(await self._get((await self.provider()).jwks_uri, "JWKS"))
        return self._keys

    async def verify_token(self, token: str, *, nonce: str | None) -> oidc.Citizen:
        """The citizen of ``token``; the provider's keys are read again once if none verifies it (rollover).

        Raises:
            Unauthorized: forged, expired, for another client or issuer, or too old for a session.
        """
        provider = await self.provider()
        s = self.settings
        args: dict[str, Any] = {
            "issuer": provider.issuer,
            "client_id": s.client_id,
            "nonce": nonce,
            "now": self.clock(),
            "leeway": s.id_token_leeway_seconds,
        }
        try:
            citizen = oidc.verify_id_token(token, await self.keys(), **args)
        except Unauthorized:
            citizen = oidc.verify_id_token(token, await self.keys(refresh=True), **args)
        return citizen

    # ---- the sealed sign-in cookie

    def seal(self, sign_in: oidc.SignIn) -> str:
        body = base64.urlsafe_b64encode(sign_in.to_json().encode()).decode()
        mac = hmac.new(self._seal_key, body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{mac}"

    def unseal(self, value: str | None) -> oidc.SignIn:
        """Raises: Unauthorized: no sign-in cookie, or one this process did not seal."""
        if not value or "." not in value:
            raise Unauthorized(
                "the sign-in was refused: no sign-in was started in this browser",
                hint="start again from the portal's Sign in button",
            )
        body, mac = value.rsplit(".", 1)
        expected = hmac.new(self._seal_key, body.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac, expected):
            raise Unauthorized(
                "the sign-in was refused: its state cookie was not made by this portal", hint="start the sign-in again"
            )
        return oidc.SignIn.from_json(base64.urlsafe_b64decode(body.encode()).decode())

    # ---- findUsage over the exchange

    def subsystems(self, conf: GlobalConf) -> list[SubsystemId]:
        return sorted((m.id.subsystem(code) for m in conf.members for code in m.subsystems), key=str)

    async def _ask(self, target: SubsystemId, subject: str, now: datetime, sem: asyncio.Semaphore) -> Answer:
        s = self.settings
        url = (
            f"{s.security_server_url.rstrip('/')}/r1/"
            + "/".join(quote(p, safe="") for p in str(target).split("/"))
            + "/findUsage"
        )
        body: dict[str, Any] = {
            "userCode": subject,
            "periodStart": format_time(now - timedelta(days=s.period_days)),
            # the wire has whole seconds and the end is exclusive: round up, or what happened in this second is
            # left out (seen: an exchange a moment before the citizen looked was not listed)
            "periodEnd": format_time(now.replace(microsecond=0) + timedelta(seconds=1 if now.microsecond else 0)),
            "offset": 0,
            "limit": s.page_limit,
        }
        found: list[usage.Usage] = []
        total = 0
        try:
            while True:
                async with (
                    sem,
                    self.session().post(
                        url,
                        json=body,
                        headers={"X-Road-Client": self.client, "Accept": "application/json"},
                        timeout=aiohttp.ClientTimeout(total=s.timeout_seconds),
                    ) as r,
                ):
                    data = await read_bounded(r, MAX_ANSWER_BYTES, "the answer")
                    if r.status != 200:
                        raise PeerError(_error_text(r.status, r.headers.get("X-Road-Error"), data))
                try:
                    parsed = json.loads(data)
                except ValueError as e:
                    raise PeerError(f"{target} answered findUsage with no JSON") from e
                total, page = usage.parse_answer(str(target), parsed)
                found.extend(page)
                body["offset"] = int(body["offset"]) + len(page)
                if not page or len(found) >= total or len(found) >= s.max_usages_per_subsystem:
                    break
        except (aiohttp.ClientError, TimeoutError) as e:
            return Answer(subsystem=str(target), error=f"not reached through the security server: {e or 'timeout'}")
        except GatewayError as e:
            return Answer(subsystem=str(target), error=e.message, usages=tuple(found), total=total)
        return Answer(subsystem=str(target), usages=tuple(found), total=total)

    async def fan_out(self, subject: str) -> tuple[list[usage.Entry], list[Answer]]:
        """Every subsystem's ``findUsage`` for ``subject``, joined (:func:`gateway.portal.usage.join`)."""
        now = self.clock()
        conf = self.globalconf()
        sem = asyncio.Semaphore(self.settings.max_parallel)
        answers = await asyncio.gather(*(self._ask(t, subject, now, sem) for t in self.subsystems(conf)))
        found = [u for a in answers for u in a.usages]
        # verifying evidence is CPU work (signatures, timestamps: about 0.1 s an item): off the event loop
        entries = await asyncio.to_thread(usage.join, found, now=now, verify=self.verify)
        return entries, list(answers)


def _error_text(status: int, xroad_error: str | None, data: bytes) -> str:
    try:
        doc = json.loads(data)
        message = str(doc.get("message", ""))[:300] if isinstance(doc, dict) else ""
    except ValueError:
        message = ""
    return f"answered {status} {xroad_error or ''}: {message}".strip()


PORTAL: web.AppKey[Portal] = web.AppKey("portal", Portal)


def render(template: str, *, status: int = 200, **values: Any) -> web.Response:
    return web.Response(
        text=_ENV.get_template(template).render(**values),
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
            "Referrer-Policy": "no-referrer",
        },
    )


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _cookie(request: web.Request, *, samesite: str, max_age: int | None) -> dict[str, Any]:
    portal = request.app[PORTAL]
    options: dict[str, Any] = {
        "httponly": True,
        "samesite": samesite,
        "path": "/",
        "secure": request.secure or portal.settings.secure_cookies,
    }
    if max_age is not None:
        options["max_age"] = max_age
    return options


async def _citizen(request: web.Request) -> tuple[oidc.Citizen, str]:
    """The signed-in citizen and their session's ID token.

    Raises:
        Unauthorized: no session, or its ID token no longer verifies (expired, forged, too old).
    """
    portal = request.app[PORTAL]
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise Unauthorized("you are not signed in", hint="sign in first")
    citizen = await portal.verify_token(token, nonce=None)
    return citizen, token


def _check_subject(request: web.Request, citizen: oidc.Citizen) -> None:
    """Whose data: the ID token's subject only. A request naming another subject is refused.

    Raises:
        Forbidden: a ``subject`` or ``userCode`` parameter other than the signed-in citizen.
    """
    for name in ("subject", "userCode"):
        asked = request.query.get(name)
        if asked is not None and asked != citizen.subject:
            raise Forbidden(
                f"you are signed in as {citizen.subject} and may see only your own data, not that of {asked[:40]!r}",
                hint="the subject is taken from your sign-in, never from the address",
            )


async def index(request: web.Request) -> web.StreamResponse:
    if request.cookies.get(SESSION_COOKIE):
        return _redirect("/usage")
    return render("start.html", citizen=None, reason=request.query.get("reason"))


async def signin(request: web.Request) -> web.StreamResponse:
    portal = request.app[PORTAL]
    sign_in = oidc.SignIn.new()
    provider = await portal.provider()
    response = _redirect(
        oidc.authorization_url(
            provider, client_id=portal.settings.client_id, redirect_uri=portal.redirect_uri, sign_in=sign_in
        )
    )
    response.set_cookie(
        SIGNIN_COOKIE, portal.seal(sign_in), **_cookie(request, samesite="Lax", max_age=SIGNIN_TTL_SECONDS)
    )
    return response


async def callback(request: web.Request) -> web.StreamResponse:
    """The provider's redirect: (1) the sign-in cookie, (2) state, (3) the code redeemed with the PKCE
    verifier, (4) the ID token verified with the nonce, (5) the session cookie set."""
    portal = request.app[PORTAL]
    # (1) the sign-in this browser started
    sign_in = portal.unseal(request.cookies.get(SIGNIN_COOKIE))
    # (2) the state it was sent with
    if not hmac.compare_digest(request.query.get("state", ""), sign_in.state):
        raise Unauthorized(
            "the sign-in was refused: the provider's answer carries another state", hint="start the sign-in again"
        )
    if "error" in request.query:
        raise Unauthorized(f"the identity provider refused the sign-in: {request.query['error'][:100]}")
    code = request.query.get("code")
    if not code:
        raise Unauthorized("the sign-in was refused: the provider's answer has no code")
    # (3) the code, with the PKCE verifier
    provider = await portal.provider()
    try:
        async with portal.session().post(
            provider.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": portal.redirect_uri,
                "client_id": portal.settings.client_id,
                "code_verifier": sign_in.code_verifier,
            },
        ) as r:
            answer = await r.json(content_type=None)
            if r.status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("id_token"), str):
                raise Unauthorized(
                    f"the identity provider refused the code ({r.status}): "
                    f"{str(answer.get('error_description', answer))[:200]}"
                )
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise PeerError(f"the identity provider's token endpoint failed: {e}") from e
    token: str = answer["id_token"]
    # (4) the ID token, with the nonce of this sign-in
    citizen = await portal.verify_token(token, nonce=sign_in.nonce)
    # (5) the session: as long as the token, at most session_ttl_seconds
    ttl = min(portal.settings.session_ttl_seconds, int((citizen.expires_at - portal.clock()).total_seconds()))
    response = render("signed-in.html", citizen=citizen, csrf=csrf_token(token))
    response.set_cookie(SESSION_COOKIE, token, **_cookie(request, samesite="Strict", max_age=max(ttl, 1)))
    response.del_cookie(SIGNIN_COOKIE, path="/")
    return response


async def usage_page(request: web.Request) -> web.StreamResponse:
    portal = request.app[PORTAL]
    citizen, token = await _citizen(request)
    _check_subject(request, citizen)
    entries, answers = await portal.fan_out(citizen.subject)
    purposes = TransparencyConf.of(portal.globalconf()).purposes  # code -> text, as published
    return render(
        "usage.html",
        citizen=citizen,
        purposes=purposes,
        csrf=csrf_token(token),
        entries=entries,
        answers=answers,
        failed=[a for a in answers if a.error],
        truncated=[a for a in answers if a.truncated],
        period_days=portal.settings.period_days,
        now=portal.clock(),
    )


async def evidence(request: web.Request) -> web.StreamResponse:
    portal = request.app[PORTAL]
    citizen, _ = await _citizen(request)
    _check_subject(request, citizen)
    entries, _answers = await portal.fan_out(citizen.subject)
    now = portal.clock()
    document = usage.evidence_file(citizen.subject, entries, now=now)
    return web.Response(
        body=json.dumps(document, indent=1).encode(),
        content_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="evidence-{citizen.subject}-{now:%Y%m%dT%H%M%SZ}.json"',
            "Cache-Control": "no-store",
        },
    )


async def signout(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token or not hmac.compare_digest(str(form.get(CSRF_FIELD, "")), csrf_token(token)):
        raise Forbidden(
            "the sign-out form did not carry its anti-forgery (CSRF) token",
            hint="use the Sign out button of the portal's page",
        )
    response = _redirect("/?reason=You+have+signed+out.")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@web.middleware
async def errors(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """Our errors as a page with their type; a session that no longer verifies is dropped."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as e:
        if e.status not in (404, 405):
            raise
        return render(
            "refused.html",
            status=e.status,
            citizen=None,
            message=f"there is no page {request.path[:200]}"
            if e.status == 404
            else f"{request.path[:200]} does not take {request.method}",
            xroad_type="Client.NotFound" if e.status == 404 else "Client.MethodNotAllowed",
            hint=None,
        )
    except GatewayError as e:
        status = e.status if 400 <= e.status < 600 else 500
        response = render(
            "refused.html", status=status, citizen=None, message=e.message, xroad_type=e.xroad_type, hint=e.hint
        )
        if isinstance(e, Unauthorized) and request.path != "/callback":
            response.del_cookie(SESSION_COOKIE, path="/")
        return response


def build_portal_app(portal: Portal) -> web.Application:
    app = web.Application(middlewares=[errors])
    app[PORTAL] = portal
    app.router.add_get("/", index)
    app.router.add_get("/signin", signin)
    app.router.add_get("/callback", callback)
    app.router.add_get("/usage", usage_page)
    app.router.add_get("/usage/evidence", evidence)
    app.router.add_post("/signout", signout)
    app.router.add_static("/static", STATIC)
    return app


@dataclass
class RunningPortal:
    portal: Portal
    runner: web.AppRunner
    url: str

    async def close(self) -> None:
        await self.runner.cleanup()
        if self.portal.http is not None:
            await self.portal.http.close()


def check_settings(s: PortalSettings) -> None:
    """Raises: ConfigError: a ``[portal]`` value out of its range, naming the key."""
    ranges = {
        "page_limit": (1, 1000),
        "max_usages_per_subsystem": (1, 10**6),
        "max_parallel": (1, 256),
        "period_days": (1, 36600),
        "session_ttl_seconds": (1, 86400),
        "id_token_leeway_seconds": (0, 600),
    }
    for key, (low, high) in ranges.items():
        value = getattr(s, key)
        if not low <= value <= high:
            raise ConfigError(f"[portal] key '{key}': {value} is not between {low} and {high}")
    if not s.timeout_seconds > 0:
        raise ConfigError(f"[portal] key 'timeout_seconds': {s.timeout_seconds} must be more than 0")
    for key in ("issuer", "security_server_url"):
        if not getattr(s, key).startswith(("http://", "https://")):
            raise ConfigError(f"[portal] key '{key}': {getattr(s, key)[:100]!r} is not an http(s) URL")


async def start_portal(portal: Portal, *, host: str | None = None, port: int | None = None) -> RunningPortal:
    """Listen (``[portal] host``/``port`` unless given) and serve; the HTTP client is opened here.

    Raises:
        ConfigError: a setting out of range, the address in use, or no portal subsystem configured nor published.
    """
    s = portal.settings
    check_settings(s)
    host = s.host if host is None else host
    sock = listen(host, s.port if port is None else port, what="the portal")
    try:
        portal.public_url = (s.public_url or f"http://{host}:{sock.getsockname()[1]}").rstrip("/")
        if not portal.client:
            portal.client = s.client
        if not portal.client:  # the portal's subsystem as the global configuration publishes it
            try:
                published = TransparencyConf.of(portal.globalconf()).portal
            except GatewayError as e:
                raise ConfigError(f"the portal cannot read the global configuration: {e.message}") from e
            portal.client = "" if published is None else str(published)
        if not portal.client:
            raise ConfigError(
                "[portal] key 'client': the portal's subsystem is not set",
                hint="set it to the subsystem (INSTANCE/CLASS/MEMBER/SUBSYSTEM) the portal calls as",
            )
        try:
            SubsystemId.parse(portal.client, encoded=False)
        except IdentifierError as e:
            raise ConfigError(f"[portal] key 'client': {e.message}") from e
        portal.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=s.timeout_seconds))
        runner = web.AppRunner(build_portal_app(portal), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        sock.close()
        if portal.http is not None:
            await portal.http.close()
        raise
    return RunningPortal(portal=portal, runner=runner, url=portal.public_url)


__all__ = [
    "PORTAL",
    "SESSION_COOKIE",
    "SIGNIN_COOKIE",
    "Answer",
    "Portal",
    "RunningPortal",
    "build_portal_app",
    "csrf_token",
    "start_portal",
]
