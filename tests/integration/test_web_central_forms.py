"""The central server's web interface over real HTTP (no browser), on SQLite and PostgreSQL: the log-in's
double-submit token, redirect target and cookies of its own, sessions (an expired one too) and CSRF refused,
bad forms (type, size), errors beside their field with the X-Road type, registration requests rejected and a
decided one refused, a role's refusal, all audited as the REST API's calls. The browser journeys are
tests/e2e/test_web_central.py."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from admin_kit import PASSWORD, Clock
from central_admin_kit import CentralAdmin, central_admin, pem

from gateway.central import registry
from gateway.central.management import build_request
from gateway.identifiers import SecurityServerId
from gateway.server.regclient import submit

pytestmark = pytest.mark.integration

_CSRF_RE = re.compile(r'name="_csrf" value="([^"]*)"')
SS3 = SecurityServerId.parse("DEV/GOV/1003/ss3")


@pytest_asyncio.fixture
async def c(database_url: str, tmp_path: Path) -> AsyncIterator[CentralAdmin]:
    async with central_admin(database_url, tmp_path) as harness:
        yield harness


def browser(c: CentralAdmin) -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1 (as a browser would) and does not follow redirects."""
    return aiohttp.ClientSession(c.url, cookie_jar=aiohttp.CookieJar(unsafe=True))


async def log_in(http: aiohttp.ClientSession, name: str, password: str = PASSWORD, *,
                 next_: str = "/ui/dashboard") -> aiohttp.ClientResponse:
    async with http.get("/ui/login") as resp:
        token = _CSRF_RE.search(await resp.text())
    assert token is not None
    async with http.post("/ui/login", data={"_csrf": token.group(1), "username": name, "password": password,
                                            "next": next_}, allow_redirects=False) as resp:
        await resp.read()
        return resp


async def csrf(http: aiohttp.ClientSession, path: str = "/ui/dashboard") -> str:
    async with http.get(path) as resp:
        assert resp.status == 200, await resp.text()
        m = _CSRF_RE.search(await resp.text())
    assert m is not None
    return m.group(1)


async def post(http: aiohttp.ClientSession, path: str, data: dict[str, str]) -> tuple[int, str, str]:
    """Status, Location and the page (HTML entities decoded) of a form POST."""
    async with http.post(path, data=data, allow_redirects=False) as resp:
        return resp.status, resp.headers.get("Location", ""), html.unescape(await resp.text())


async def test_log_in_cookies_sessions_and_bad_forms(c: CentralAdmin) -> None:
    await c.store.add_user("admin", PASSWORD, frozenset({"system-administrator", "registration-officer"}),
                           now=datetime.now(UTC))
    async with browser(c) as http:
        # the log-in form without its cookie's value is refused
        status, _, text = await post(http, "/ui/login", {"username": "admin", "password": PASSWORD})
        assert status == 403 and "anti-forgery (CSRF) token" in text
        # a wrong password is told on the form, with the X-Road type
        resp = await log_in(http, "admin", "not the password at all")
        assert resp.status == 401
        # only a page of the interface is a target after the log-in
        for target, lands in (("/ui/servers", "/ui/servers"), ("//evil.example/", "/ui/dashboard"),
                              ("/api/v1/members", "/ui/dashboard")):
            resp = await log_in(http, "admin", next_=target)
            assert resp.status == 303 and resp.headers["Location"] == lands, target
        cookies = {m.key: m for m in http.cookie_jar}
        assert "gw_session" not in cookies  # the security server's cookie on the same host stays as it is
        session = cookies["gw_central_session"]
        assert session["httponly"] and session["samesite"] == "Strict" and session["path"] == "/ui"
        token = await csrf(http)
        # a form in another media type, or too large, is refused before it is read
        async with http.post("/ui/members", json={"id": "DEV/GOV/1"}, allow_redirects=False) as r:
            assert r.status == 400 and "must be sent as application/x-www-form-urlencoded" in html.unescape(
                await r.text())
        status, _, text = await post(http, "/ui/members", {"_csrf": token, "name": "x" * 60_000})
        assert status == 413 and "larger than 51200 bytes" in text and "Client.BadRequest" in text
        # a form without the session's CSRF token is refused, and audited
        status, _, text = await post(http, "/ui/members", {"id": "DEV/GOV/1003", "name": "Agency C"})
        assert status == 403 and "anti-forgery (CSRF) token of your session" in text
    async with browser(c) as http:
        # no session: a page goes to the log-in form, a form is refused
        async with http.get("/ui/members", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/ui/login?next=/ui/members"
        status, _, text = await post(http, "/ui/members", {"id": "DEV/GOV/1003", "name": "Agency C"})
        assert status == 403 and "this form needs a session" in text
        # a session cookie that is no valid session token
        http.cookie_jar.update_cookies({"gw_central_session": "not-a-token"})
        async with http.get("/ui/members", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/ui/login?next=/ui/members&reason=")
        status, _, text = await post(http, "/ui/members", {"_csrf": "x", "id": "DEV/GOV/1003", "name": "C"})
        assert status == 401 and "Log in" in text
    assert not await registry.list_members(c.central.engine)
    refused = await c.audit(result="refused")
    assert any(e.action == "web form /ui/members" and e.actor == "admin" for e in refused)


async def test_errors_beside_their_field_decisions_and_roles(c: CentralAdmin) -> None:
    now = datetime.now(UTC)
    await c.store.add_user("olga", PASSWORD, frozenset({"registration-officer"}), now=now)
    await c.store.add_user("sam", PASSWORD, frozenset({"security-officer"}), now=now)
    await c.store.add_user("audrey", PASSWORD, frozenset({"auditor"}), now=now)
    async with browser(c) as sam:
        assert (await log_in(sam, "sam")).status == 303
        token = await csrf(sam, "/ui/trust-services")
        # a schema rule broken: beside the field, in its label's words, with the type
        status, _, text = await post(sam, "/ui/trust-services/tsas", {"_csrf": token, "name": "TSA",
                                                                      "url": "ftp://tsa.example", "pem": "x"})
        assert status == 400
        assert re.search(r'id="tsa-url-error">[^<]*URL[^<]*<span class="type">\(Client\.BadRequest\)', text), text
        assert 'aria-invalid="true" aria-describedby="tsa-url-error"' in text
        # a certificate that is none: on the form
        status, _, text = await post(sam, "/ui/trust-services/cas", {"_csrf": token, "name": "Test CA",
                                                                     "pem": "not a certificate"})
        assert status == 400 and 'id="ca-error"' in text
        status, where, _ = await post(sam, "/ui/trust-services/cas", {"_csrf": token, "name": "Test CA",
                                                                      "pem": pem(c.pki.ca_cert)})
        assert status == 303 and where.startswith("/ui/trust-services?done=")
    async with browser(c) as olga:
        assert (await log_in(olga, "olga")).status == 303
        token = await csrf(olga, "/ui/servers")
        status, _, text = await post(olga, "/ui/members", {"_csrf": token, "id": "XX/GOV/1003", "name": "C"})
        assert status == 400 and 'id="add-id-error"' in text and "instance" in text
        status, _, _ = await post(olga, "/ui/members", {"_csrf": token, "id": "DEV/GOV/1003", "name": "Agency C"})
        assert status == 303
        status, _, text = await post(olga, "/ui/servers", {"_csrf": token, "id": str(SS3), "address": "no port"})
        assert status == 400 and 'id="add-address-error"' in text
        # two requests: one rejected with a reason; a decided request cannot be decided again
        for code in ("ss3", "ss4"):
            cert = c.pki.issue_auth(SecurityServerId.parse(f"DEV/GOV/1003/{code}"))
            await submit(f"{c.central.url}/registration", build_request(
                "auth_cert_reg", server=cert.identity, signer_key=cert.key, signer_cert=cert.cert, now=now,
                address=f"{code}.example.org:5500"))
        async with olga.get("/ui/registration-requests?state=submitted") as r:
            queue = html.unescape(await r.text())
        assert "Registration requests: 2 in all" in queue
        status, where, _ = await post(olga, "/ui/registration-requests/2/reject",
                                      {"_csrf": token, "comment": "unknown server"})
        assert status == 303 and where.startswith("/ui/registration-requests/2?done=")
        async with olga.get(where) as r:
            page = html.unescape(await r.text())
        assert "rejected" in page and "by olga" in page and "unknown server" in page and "verified" in page
        status, _, text = await post(olga, "/ui/registration-requests/2/approve", {"_csrf": token})
        assert status == 409 and "is rejected already" in text and "Client.Conflict" in text
        status, _, _ = await post(olga, "/ui/registration-requests/1/approve", {"_csrf": token})
        assert status == 303
        async with olga.get("/ui/servers/DEV:GOV:1003:ss3") as r:
            assert r.status == 200 and "ss3.example.org:5500" in await r.text()
    async with browser(c) as audrey:
        # the auditor sees requests and versions, not the registry; a change posted by hand is refused
        assert (await log_in(audrey, "audrey")).status == 303
        token = await csrf(audrey, "/ui/registration-requests")
        async with audrey.get("/ui/members") as r:
            assert r.status == 403 and "may not call listMembers" in await r.text()
        status, _, text = await post(audrey, "/ui/registration-requests/1/reject", {"_csrf": token})
        assert status == 403 and "audrey (roles: auditor) may not call rejectRegistrationRequest" in text
    decisions = [(e.actor, e.action, e.result) for e in await c.audit() if "RegistrationRequest" in e.action]
    assert set(decisions) == {("olga", "rejectRegistrationRequest", "success"),
                              ("olga", "approveRegistrationRequest", "refused"),
                              ("olga", "approveRegistrationRequest", "success"),
                              ("audrey", "rejectRegistrationRequest", "refused")}
    assert any(e.action == "addTsa" and e.result == "refused" and e.actor == "sam" for e in await c.audit())


async def test_an_expired_session_sends_back_to_the_log_in(database_url: str, tmp_path: Path) -> None:
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    async with central_admin(database_url, tmp_path, clock=clock) as c:
        await c.store.add_user("olive", PASSWORD, frozenset({"observer"}), now=clock())
        async with browser(c) as http:
            assert (await log_in(http, "olive")).status == 303
            token = await csrf(http)
            clock.advance(901)  # past [admin] session_ttl_seconds (900)
            async with http.get("/ui/members", allow_redirects=False) as resp:
                assert resp.status == 303 and "session+token+has+expired" in resp.headers["Location"]
            status, _, text = await post(http, "/ui/logout", {"_csrf": token})
            assert status == 401 and "session token has expired" in text
