"""The citizen portal (gateway/portal/) against the demo's federation with its development identity provider
(``start_federation(portal=True)``, as ``gateway demo`` starts it).

Journey (a real browser: Playwright driving Debian's Chromium, axe-core on every page, screenshots): after
exchanges about citizen 1, citizen 2 and someone else, citizen 1 signs in through the provider and sees exactly
their exchanges, each recorded by both sides and proven, downloads the evidence file, which `gateway log
verify-usage` accepts, and signs out; citizen 2, typing their subject id, sees only theirs; once the federation's
clock passes an embargo's date, citizen 1 sees that exchange too. Refusals, sent by hand: another subject's data
asked for by parameter, forged, expired, unsigned and other-audience ID tokens as the session, a callback with
another state, without the sign-in cookie or with a used code, a sign-out without its CSRF token;
`gateway portal serve` as a process.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import pytest_asyncio
from joserfc import jwt
from joserfc.jwk import ECKey
from playwright.async_api import Page, expect
from portal_kit import jar, sign_in
from process_kit import CONSUMER, GATEWAY, PERSONS, clean_env, run_cli
from web_kit import Shots, check_page, chromium, new_context

from gateway.dev.demo import Federation, start_federation
from gateway.dev.idp import CITIZENS
from gateway.portal.app import SESSION_COOKIE, SIGNIN_COOKIE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]

CITIZEN_1, CITIZEN_2 = CITIZENS[0], CITIZENS[1]
SOMEONE = "EE50001010000"  # a person who is no test citizen
EMBARGO = timedelta(minutes=3)  # short: the federation's clock moves past it within the configuration's validity


class Clock:
    """The federation's clock: real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class World:
    fed: Federation
    clock: Clock

    @property
    def portal(self) -> str:
        assert self.fed.portal is not None
        return self.fed.portal.running.url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    clock = Clock()
    fed = await start_federation(
        tmp_path_factory.mktemp("portal") / "fed",
        clock=clock,
        portal=True,
        central_overrides={"transparency_embargo_clients": (CONSUMER,)},
        server_overrides={"checkpoint_interval_seconds": 3600.0, "checkpoint_max_records": 10**6},
    )
    try:
        yield World(fed=fed, clock=clock)
    finally:
        await fed.close()


async def test_federation_json_names_the_portal(world: World) -> None:
    d = world.fed.describe()["portal"]
    assert d["url"] == world.portal and d["client"] == "DEV/GOV/1001/portal"
    assert d["issuer"] == world.fed.portal.idp.url  # type: ignore[union-attr]
    assert [c["subject"] for c in d["citizens"]] == [c.subject for c in CITIZENS]
    conf = world.fed.server("ss1").globalconf.require_valid()
    assert "portal" in next(m for m in conf.members if str(m.id) == "DEV/GOV/1001").subsystems


async def exchange(world: World, message_id: str, headers: dict[str, str]) -> str:
    """One r1 request about someone through ss1's client port to the persons service on ss2; its message id."""
    url = f"{world.fed.server('ss1').client_url}/r1/{PERSONS}/?limit=1"
    sent = {"X-Road-Client": CONSUMER, "X-Road-Id": message_id, "Accept": "application/json", **headers}
    async with aiohttp.ClientSession() as http, http.get(url, headers=sent) as r:
        assert r.status == 200, await r.text()
        return r.headers["X-Road-Id"]


async def checkpoint(world: World) -> None:
    """A signed, timestamped checkpoint on both servers now (the background round would wait an hour)."""
    for code in ("ss1", "ss2"):
        ss = world.fed.server(code)
        assert ss.checkpointer is not None
        await ss.checkpointer.run_once(ss.clock(), force=True)


async def rows(page: Page) -> dict[str, str]:
    """Message id -> the row's text, of every row of the page's table."""
    found = {}
    for row in await page.locator("tr[data-message-id]").all():
        found[str(await row.get_attribute("data-message-id"))] = await row.inner_text()
    return found


async def sign_in_browser(page: Page, world: World, subject: str) -> None:
    await page.goto(f"{world.portal}/signin")
    await page.get_by_label("or another subject id").fill(subject)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{world.portal}/usage")
    await expect(page.locator("header")).to_contain_text(subject)


async def test_citizens_see_exactly_their_uses_proven_and_an_embargo_from_its_date(
    world: World, tmp_path: Path
) -> None:
    until = (world.clock() + EMBARGO).replace(microsecond=0)
    c1, c2 = CITIZEN_1.subject, CITIZEN_2.subject
    basis = {"X-Road-Legal-Basis": "Social Welfare Act 12"}
    mine = {
        await exchange(world, "portal-1", {"X-Road-Data-Subject": c1, "X-Road-Purpose": "BENEFITS", **basis}),
        await exchange(world, "portal-2", {"X-Road-Data-Subject": f"{SOMEONE}, {c1}", "X-Road-Purpose": "TAX"}),
    }
    theirs = {await exchange(world, "portal-3", {"X-Road-Data-Subject": c2, "X-Road-Purpose": "TAX"})}
    await exchange(world, "portal-4", {"X-Road-Data-Subject": SOMEONE, "X-Road-Purpose": "TAX"})
    embargo = f'embargo; until="{until:%Y-%m-%dT%H:%M:%SZ}"'
    embargoed = await exchange(
        world, "portal-5", {"X-Road-Data-Subject": c1, "X-Road-Purpose": "POLICE", "X-Road-Transparency": embargo}
    )
    await checkpoint(world)
    shots = Shots(tmp_path, "portal")
    async with chromium() as browser:
        ctx = await new_context(browser)
        page = await ctx.new_page()
        # citizen 1 signs in from the start page, choosing themself on the provider's page
        await page.goto(f"{world.portal}/")
        await check_page(page, shots, "start")
        await page.get_by_role("link", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await check_page(page, shots, "idp-signin")
        await page.get_by_label(f"{CITIZEN_1.name} ({c1})").check()
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(f"{world.portal}/usage")
        await expect(page.locator("header")).to_contain_text(c1)
        cookie = next(c for c in await ctx.cookies() if c["name"] == SESSION_COOKIE)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
        assert not cookie["secure"]  # plain HTTP on loopback; Secure over TLS or with [portal] secure_cookies
        assert SIGNIN_COOKIE not in {c["name"] for c in await ctx.cookies()}
        # exactly their two exchanges, each recorded by both sides and proven on both
        seen = await rows(page)
        assert set(seen) == mine, seen
        for text in seen.values():
            assert "both sides" in text and "consumer: proven" in text and "provider: proven" in text, text
        assert "Checking eligibility for social benefits" in seen["portal-1"]
        assert "Social Welfare Act 12" in seen["portal-1"] and "Agency A" in seen["portal-1"]
        await expect(page.get_by_role("alert")).to_have_count(0)  # every information system answered
        await check_page(page, shots, "usage-citizen-1")
        async with page.expect_download() as info:
            await page.get_by_role("link", name="Download the evidence").click()
        evidence = tmp_path / "evidence.json"
        await (await info.value).save_as(evidence)
        document = json.loads(evidence.read_text())
        assert document["subject"] == c1
        assert {e["messageId"] for e in document["entries"]} == mine and len(document["entries"]) == 4
        rc, out, err = await run_cli("log", "verify-usage", str(evidence), "--anchor", str(world.fed.anchor_path))
        assert rc == 0, out + err
        # signed out, the page is refused
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("status")).to_contain_text("You have signed out.")
        await page.goto(f"{world.portal}/usage")
        await expect(page.get_by_role("alert")).to_contain_text("you are not signed in")
        await check_page(page, shots, "refused")
        # citizen 2, typing their subject id: their one exchange, none of citizen 1's
        await sign_in_browser(page, world, c2)
        assert set(await rows(page)) == theirs
        await check_page(page, shots, "usage-citizen-2")
        # the embargo's date comes: citizen 1 sees that exchange too, proven logged before it
        world.clock.offset = EMBARGO + timedelta(seconds=5)
        try:
            await page.get_by_role("button", name="Sign out").click()
            await sign_in_browser(page, world, c1)
            seen = await rows(page)
            assert set(seen) == {*mine, embargoed}
            assert "Criminal investigation" in seen[embargoed] and "provider: proven" in seen[embargoed]
            assert f"embargoed until {until:%Y-%m-%d %H:%M:%S} UTC" in seen[embargoed]
            await check_page(page, shots, "usage-after-embargo")
        finally:
            world.clock.offset = timedelta()


async def test_another_subjects_data_is_refused(world: World) -> None:
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        r = await sign_in(http, world.portal, CITIZEN_1.subject)
        assert r.status == 200
        for path in ("/usage", "/usage/evidence"):
            for name in ("subject", "userCode"):
                async with http.get(f"{world.portal}{path}", params={name: CITIZEN_2.subject}) as resp:
                    assert resp.status == 403
                    assert "may see only your own data" in await resp.text()
            async with http.get(f"{world.portal}{path}", params={"subject": CITIZEN_1.subject}) as resp:
                assert resp.status == 200
        async with http.get(f"{world.portal}/usage/evidence") as resp:
            assert (await resp.json(content_type=None))["subject"] == CITIZEN_1.subject


async def test_forged_expired_and_unsigned_id_tokens_are_refused(world: World) -> None:
    assert world.fed.portal is not None
    idp = world.fed.portal.idp.provider
    portal = world.fed.portal.running.portal
    now = int(world.clock().timestamp())
    claims = {
        "iss": idp.issuer,
        "sub": CITIZEN_2.subject,
        "aud": portal.settings.client_id,
        "iat": now,
        "exp": now + 600,
    }
    other = ECKey.generate_key("P-256", parameters={"kid": idp.key.kid}, private=True)  # same kid, other key
    forged = jwt.encode({"alg": "ES256", "kid": idp.key.kid}, claims, other)
    world.clock.offset = -timedelta(hours=2)
    try:
        expired = idp.id_token(CITIZEN_2.subject, CITIZEN_2.name, client_id=portal.settings.client_id, nonce=None)
    finally:
        world.clock.offset = timedelta()
    for_other_client = idp.id_token(CITIZEN_2.subject, CITIZEN_2.name, client_id="someone-else", nonce=None)
    _header, body, _sig = forged.split(".")
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{body}."
    cases = {
        "forged": (forged, "signature does not verify"),
        "expired": (expired, "expired"),
        "audience": (for_other_client, "aud"),
        "unsigned": (unsigned, "signature does not verify"),
        "garbage": ("not-a-token", "signature does not verify"),
    }
    for name, (token, says) in cases.items():
        async with aiohttp.ClientSession(cookie_jar=jar()) as http:
            http.cookie_jar.update_cookies({SESSION_COOKIE: token}, response_url=_url(world.portal))
            async with http.get(f"{world.portal}/usage") as resp:
                text = await resp.text()
                assert resp.status == 401, name
                assert says in text, (name, text[-800:])
                assert "Client.Unauthorized" in text
    # the genuine one for comparison
    good = idp.id_token(CITIZEN_2.subject, CITIZEN_2.name, client_id=portal.settings.client_id, nonce=None)
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        http.cookie_jar.update_cookies({SESSION_COOKIE: good}, response_url=_url(world.portal))
        async with http.get(f"{world.portal}/usage") as resp:
            assert resp.status == 200 and CITIZEN_2.subject in await resp.text()


async def test_callback_checks_state_sign_in_cookie_and_code(world: World) -> None:
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        # no sign-in started in this client
        async with http.get(f"{world.portal}/callback", params={"code": "x", "state": "y"}) as r:
            assert r.status == 401 and "no sign-in was started" in await r.text()
        async with http.get(f"{world.portal}/signin", allow_redirects=False) as r:
            state = parse_qs(urlsplit(r.headers["Location"]).query)["state"][0]
        async with http.get(f"{world.portal}/callback", params={"code": "x", "state": state + "x"}) as r:
            assert r.status == 401 and "another state" in await r.text()
        async with http.get(f"{world.portal}/callback", params={"code": "not-issued", "state": state}) as r:
            assert r.status == 401 and "unknown, used or expired code" in await r.text()
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        # a code is good once: the second callback with it is refused
        async with http.get(f"{world.portal}/signin", allow_redirects=False) as r:
            authorize = r.headers["Location"]
        async with http.get(authorize) as r:
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', await r.text()))
        fields["subject"] = CITIZEN_1.subject
        async with http.post(authorize.split("?")[0], data=fields, allow_redirects=False) as r:
            callback = r.headers["Location"]
        async with http.get(callback, allow_redirects=False) as r:
            assert r.status == 200
        async with http.get(f"{world.portal}/signin", allow_redirects=False):
            pass  # a new sign-in cookie, so that only the code is wrong
        async with http.get(
            callback.replace(parse_qs(urlsplit(callback).query)["state"][0], _state(http)), allow_redirects=False
        ) as r:
            assert r.status == 401 and "unknown, used or expired code" in await r.text()


async def test_sign_out_needs_its_csrf_token(world: World) -> None:
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        await sign_in(http, world.portal, CITIZEN_1.subject)
        for form in ({}, {"_csrf": "0" * 64}):
            async with http.post(f"{world.portal}/signout", data=form, allow_redirects=False) as r:
                assert r.status == 403 and "anti-forgery (CSRF) token" in await r.text()
        async with http.get(f"{world.portal}/usage") as r:
            assert r.status == 200  # still signed in


def _settings(world: World, path: Path, *, client: str) -> Path:
    assert world.fed.portal is not None
    path.write_text(
        f'[globalconf]\nanchor = "{world.fed.anchor_path}"\ncache_dir = "{path.parent / "gc"}"\n'
        f'[portal]\nport = 0\nclient = "{client}"\nissuer = "{world.fed.portal.idp.url}"\n'
        f'security_server_url = "{world.fed.server("ss1").client_url}"\n'
    )
    return path


async def test_portal_serve_command(world: World, tmp_path: Path) -> None:
    # no [portal] client: the portal's subsystem is the one the global configuration publishes
    settings = _settings(world, tmp_path / "portal.toml", client="")
    proc = await asyncio.create_subprocess_exec(
        str(GATEWAY),
        "-c",
        str(settings),
        "portal",
        "serve",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.startswith("portal listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/") as r:
                assert r.status == 200 and "Sign in" in await r.text()
            async with http.get(f"{url}/signin", allow_redirects=False) as r:
                query = parse_qs(urlsplit(r.headers["Location"]).query)
                assert query["redirect_uri"] == [f"{url}/callback"] and query["code_challenge_method"] == ["S256"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # a malformed subsystem stops it before it listens
    rc, _out, err = await run_cli(
        "-c", str(_settings(world, tmp_path / "bad.toml", client="DEV/GOV")), "portal", "serve"
    )
    assert rc == 2 and "[portal] key 'client'" in err
    bad = tmp_path / "bad3.toml"
    bad.write_text(_settings(world, bad, client="").read_text() + "page_limit = 0\n")
    rc, _out, err = await run_cli("-c", str(bad), "portal", "serve")
    assert rc == 2 and "[portal] key 'page_limit': 0 is not between 1 and 1000" in err


def _state(http: aiohttp.ClientSession) -> str:
    import base64

    sealed = next(c.value for c in http.cookie_jar if c.key == SIGNIN_COOKIE)
    return str(json.loads(base64.urlsafe_b64decode(sealed.rsplit(".", 1)[0]))["state"])


def _b64(value: dict[str, str]) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _url(base: str) -> object:
    from yarl import URL

    return URL(base)


async def test_identity_provider_refuses_bad_requests(world: World) -> None:
    assert world.fed.portal is not None
    idp, portal = world.fed.portal.idp.url, world.fed.portal.running.portal
    good = {
        "response_type": "code",
        "client_id": portal.settings.client_id,
        "redirect_uri": portal.redirect_uri,
        "scope": "openid",
        "state": "s",
        "nonce": "n",
        "code_challenge": "c" * 43,
        "code_challenge_method": "S256",
    }
    async with aiohttp.ClientSession(cookie_jar=jar()) as http:
        # an unknown client or redirect URI: a page, never a redirect to the unregistered address
        for change, says in (
            ({"client_id": "other"}, "unknown client_id"),
            ({"redirect_uri": "http://evil.example/cb"}, "is not registered"),
        ):
            async with http.get(f"{idp}/authorize", params={**good, **change}, allow_redirects=False) as r:
                assert r.status == 400 and says in await r.text()
        # a request the client can be told about by redirect: the OAuth error code, with the state
        for change, error in (
            ({"response_type": "token"}, "unsupported_response_type"),
            ({"scope": "profile"}, "invalid_scope"),
            ({"code_challenge_method": "plain"}, "invalid_request"),
        ):
            async with http.get(f"{idp}/authorize", params={**good, **change}, allow_redirects=False) as r:
                assert r.status == 303
                assert parse_qs(urlsplit(r.headers["Location"]).query) == {"error": [error], "state": ["s"]}
        # the token endpoint: a wrong PKCE verifier spends the code; other grants are refused
        async with http.get(f"{world.portal}/signin", allow_redirects=False) as r:
            authorize = r.headers["Location"]
        async with http.get(authorize) as r:
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', await r.text()))
        async with http.post(
            f"{idp}/authorize", data={**fields, "subject": CITIZEN_1.subject}, allow_redirects=False
        ) as r:
            code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": portal.redirect_uri,
            "client_id": portal.settings.client_id,
            "code_verifier": "wrong" * 10,
        }
        for sent, says in (
            (form, "does not match the code_challenge"),
            (form, "unknown, used or expired code"),
            ({**form, "grant_type": "password"}, "grant_type must be authorization_code"),
        ):
            async with http.post(f"{idp}/token", data=sent) as r:
                assert r.status == 400 and says in (await r.json())["error_description"]
        # a subject id without its country prefix
        async with http.post(
            f"{idp}/authorize", data={**fields, "subject_id": "38001085718"}, allow_redirects=False
        ) as r:
            assert r.status == 400 and "is not a subject id with a country prefix" in await r.text()
        # a form without the provider's CSRF cookie value
        async with http.post(
            f"{idp}/authorize", data={**fields, "_csrf": "x", "subject": CITIZEN_1.subject}, allow_redirects=False
        ) as r:
            assert r.status == 403 and "CSRF" in await r.text()
