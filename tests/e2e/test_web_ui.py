"""The security server's web interface in a real browser (Playwright driving Debian's Chromium) against a
federation started as ``gateway demo`` starts one (:func:`gateway.dev.demo.start_federation`).

Journeys: log-in, CSRF, log-out and session expiry; an observer who sees the pages but whose every change is
refused by the server, even when posted by hand; an operator who adds a client and an access right through the
pages, after which an exchange succeeds; an auditor who finds that exchange in the log, sees its inclusion proof
verified, downloads an archive and has ``gateway log verify`` accept it. axe-core checks every page (no serious
or critical WCAG 2.1 A/AA violation); every page is screenshotted (``web_kit.Shots``).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from playwright.async_api import Page, expect
from process_kit import CONSUMER, PERSONS, run_cli
from web_kit import Shots, check_page, chromium, csrf_of, log_in, new_context

from gateway.admin.schema import Page as ListPage
from gateway.central import registration
from gateway.dev.demo import Federation, start_federation
from gateway.identifiers import ServiceId
from gateway.trust import keys

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SESSION_TTL = 900  # seconds; [admin] session_ttl_seconds default
AUDIT_PAGE = ListPage(limit=100)  # audit entries read back by the tests
PERSONS_PAGE = "/ui/services/" + ServiceId.parse(PERSONS, encoded=False).encoded_id()


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
    creds: dict[str, dict[str, str]]  # server code -> admin_url, username, password

    def url(self, code: str) -> str:
        return self.creds[code]["admin_url"]

    def password(self, code: str) -> str:
        return self.creds[code]["password"]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = Clock()
    fed = await start_federation(
        tmp_path / "fed", clock=clock,
        # checkpoint rounds are driven by the test (run_once); the background task would wait an hour
        server_overrides={"checkpoint_interval_seconds": 3600.0, "checkpoint_max_records": 10**6},
    )
    try:
        servers = json.loads(Path(fed.describe()["admin_credentials"]).read_text())["servers"]
        creds = {sid.rsplit("/", 1)[1]: entry for sid, entry in servers.items()}
        yield World(fed=fed, clock=clock, creds=creds)
    finally:
        await fed.close()


async def exchange(fed: Federation, client: str, message_id: str) -> aiohttp.ClientResponse:
    """One r1 request through ss1's client port to the persons service on ss2."""
    url = f"{fed.server('ss1').client_url}/r1/{PERSONS}/?limit=2"
    async with aiohttp.ClientSession() as http, http.get(
        url, headers={"X-Road-Client": client, "X-Road-Id": message_id, "Accept": "application/json"},
    ) as resp:
        await resp.read()
        return resp


async def test_log_in_csrf_log_out_and_session_expiry(world: World, tmp_path: Path) -> None:
    shots = Shots(tmp_path, "session")
    url, ss1 = world.url("ss1"), world.fed.server("ss1")
    async with chromium() as browser:
        ctx = await new_context(browser)
        page = await ctx.new_page()
        # (1) no session: a page sends the browser to the log-in form
        await page.goto(f"{url}/ui/clients")
        await expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/clients$"))
        await check_page(page, shots, "login")
        # (2) a wrong password is told beside the form, with the X-Road type
        await page.get_by_label("User name").fill("admin")
        await page.get_by_label("Password").fill("not the password at all")
        await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_role("alert")).to_contain_text("user name or password is wrong")
        await expect(page.get_by_role("alert")).to_contain_text("Client.Unauthorized")
        await check_page(page, shots, "login-refused")
        # (3) log-in with the keyboard alone: skip link, user name, password, Enter
        await page.goto(f"{url}/ui/login?next=/ui/clients")
        await page.keyboard.press("Tab")
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "login-username"
        await page.keyboard.type("admin")
        await page.keyboard.press("Tab")
        await page.keyboard.type(world.password("ss1"))
        await page.keyboard.press("Enter")
        await expect(page).to_have_url(re.compile(r"/ui/clients$"))
        [cookie] = [c for c in await ctx.cookies() if c["name"] == "gw_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
        assert not cookie["secure"]  # plain HTTP on loopback; Secure when served over TLS
        await page.goto(f"{url}/ui/dashboard")
        await expect(page.get_by_role("heading", name="Global configuration")).to_be_visible()
        # the readiness checks of the running server, as /readyz reports them
        ready = page.get_by_role("region", name="Readiness checks")
        await expect(ready).to_contain_text("messagelog")
        await expect(page.locator("main")).to_contain_text("Ready: every check passes.")
        await expect(page.locator("main")).to_contain_text("UTC")
        await expect(page.get_by_role("heading", name="Exchanges in the last hour")).to_be_visible()
        await check_page(page, shots, "dashboard")
        # (4) a POST without the CSRF token, or with another one, is refused before anything happens
        for form in ({"id": "DEV/GOV/1001/forged"}, {"id": "DEV/GOV/1001/forged", "_csrf": "0" * 64}):
            resp = await page.request.post(f"{url}/ui/clients", form=form)
            assert resp.status == 403
            assert "anti-forgery (CSRF) token" in await resp.text()
        assert "DEV/GOV/1001/forged" not in {str(c.id) for c in await ss1.store.list_clients()}
        # (5) log-out ends the session: the same cookie, sent again, is refused
        await page.get_by_role("button", name="Log out").click()
        await expect(page.get_by_role("status")).to_contain_text("You have logged out.")
        await ctx.add_cookies([cookie])
        await page.goto(f"{url}/ui/dashboard")
        await expect(page.get_by_role("status")).to_contain_text("revoked by a logout")
        # (6) a session expires with its token
        await log_in(page, url, "admin", world.password("ss1"))
        world.clock.offset += timedelta(seconds=SESSION_TTL + 1)
        await page.goto(f"{url}/ui/services")
        await expect(page.get_by_role("status")).to_contain_text("session token has expired")
        await ctx.close()
    entries, _ = await ss1.admin_store.list_audit(AUDIT_PAGE, result="refused")
    assert any(e.status == 403 and "CSRF" in e.details.get("error", "") for e in entries)


async def _visit_every_page(page: Page, url: str, shots: Shots, client: str) -> None:
    """Every page of the interface for a user with every role: axe-core and a screenshot each."""
    for name, path in (("clients", "/ui/clients"), ("services", "/ui/services"), ("groups", "/ui/local-groups"),
                       ("keys", "/ui/keys"),
                       ("messagelog", "/ui/messagelog"), ("users", "/ui/users"), ("audit-log", "/ui/audit-log")):
        await page.goto(f"{url}{path}")
        await check_page(page, shots, name)
    await page.goto(f"{url}/ui/clients")
    await page.get_by_role("link", name=client).click()
    await expect(page.get_by_role("heading", name=f"Client {client}")).to_be_visible()
    await check_page(page, shots, "client")
    await page.goto(f"{url}/ui/account")
    await check_page(page, shots, "account")


async def test_observer_sees_pages_but_every_change_is_refused(world: World, tmp_path: Path) -> None:
    shots = Shots(tmp_path, "observer")
    url, ss2 = world.url("ss2"), world.fed.server("ss2")
    async with chromium() as browser:
        admin = await (await new_context(browser)).new_page()
        await log_in(admin, url, "admin", world.password("ss2"))
        # the administrator adds the observer through the users page
        await admin.goto(f"{url}/ui/users")
        form = admin.locator("form", has=admin.get_by_role("heading", name="Add a user"))
        await form.get_by_label("User name").fill("observer1")
        await form.get_by_label("Password").fill("observer password 1")
        await form.get_by_label("observer", exact=True).check()
        await form.get_by_role("button", name="Add user").click()
        await expect(admin.get_by_role("status")).to_contain_text("User observer1 added.")
        await _visit_every_page(admin, url, shots, "DEV/GOV/1002/registry")
        await admin.goto(f"{url}/ui/users")
        await admin.get_by_role("link", name="observer1").click()
        await expect(admin.get_by_role("heading", name="Change the roles")).to_be_visible()
        await check_page(admin, shots, "user")
        # a local group added, then removed with the keyboard alone, through the confirmation page
        await admin.goto(f"{url}/ui/local-groups")
        add = admin.locator("form", has=admin.get_by_role("heading", name="Add a local group"))
        await add.get_by_label("Code").fill("webtmp")
        await add.get_by_role("button", name="Add group").click()
        await expect(admin.get_by_role("status")).to_contain_text("Local group webtmp added")
        for _ in range(80):
            if await admin.evaluate("document.activeElement.textContent") == "Remove group webtmp":
                break
            await admin.keyboard.press("Tab")
        assert await admin.evaluate("document.activeElement.textContent") == "Remove group webtmp"
        await admin.keyboard.press("Enter")
        await expect(admin.get_by_role("heading", name="Remove local group webtmp?")).to_be_visible()
        await check_page(admin, shots, "confirm")
        for _ in range(30):
            if await admin.evaluate("document.activeElement.textContent") == "Remove":
                break
            await admin.keyboard.press("Tab")
        await admin.keyboard.press("Enter")
        await expect(admin.get_by_role("status")).to_contain_text("Local group webtmp removed.")
        await admin.goto(f"{url}{PERSONS_PAGE}")
        await check_page(admin, shots, "service")
        # the observer sees the pages, without their forms
        ctx = await new_context(browser)
        page = await ctx.new_page()
        await log_in(page, url, "observer1", "observer password 1")
        nav = page.get_by_role("navigation", name="Pages")
        await expect(nav.get_by_role("link", name="Users and API keys")).to_have_count(0)
        await expect(nav.get_by_role("link", name="Message log")).to_have_count(0)
        await page.goto(f"{url}/ui/clients")
        await expect(page.get_by_role("table")).to_contain_text("DEV/GOV/1002/registry")
        await expect(page.get_by_role("heading", name="Add a client")).to_have_count(0)
        await page.goto(f"{url}{PERSONS_PAGE}")
        await expect(page.get_by_role("heading", name="Grant access")).to_have_count(0)
        await check_page(page, shots, "service-observer")
        # every change posted by hand, with the session's own CSRF token, is refused by the server
        token = await csrf_of(page)
        for path, form_data in (
            ("/ui/clients", {"id": "DEV/GOV/1002/sneaky"}),
            (f"{PERSONS_PAGE}/access-rights", {"subject": f"SUBSYSTEM:{CONSUMER}x"}),
            (f"{PERSONS_PAGE}", {"url": "http://127.0.0.1:9/", "enabled": "true"}),
            ("/ui/users", {"username": "intruder", "password": "intruder password", "role-auditor": "true"}),
            ("/ui/api-keys", {"name": "intruder", "role-observer": "true"}),
            (f"{PERSONS_PAGE}/remove", {"confirm": "yes"}),
            ("/ui/clients/DEV:GOV:1002:registry/remove", {"confirm": "yes"}),
            ("/ui/users/admin/remove", {"confirm": "yes"}),
            ("/ui/services/from-openapi", {"id": f"{PERSONS}x", "openapi_url": "http://127.0.0.1:9/"}),
        ):
            resp = await page.request.post(f"{url}{path}", form={**form_data, "_csrf": token})
            assert resp.status == 403, path
            assert "observer1 (roles: observer) may not call" in await resp.text()
        await page.goto(f"{url}/ui/users")
        await expect(page.get_by_role("alert")).to_contain_text("may not call listUsers")
        await check_page(page, shots, "refused")
        # at 320 px wide every page still fits (a wide table scrolls inside its own region)
        narrow = await (await new_context(browser, width=320)).new_page()
        await log_in(narrow, url, "admin", world.password("ss2"))
        for name, path in (("dashboard", "/ui/dashboard"), ("clients", "/ui/clients"), ("service", PERSONS_PAGE),
                           ("users", "/ui/users"), ("audit-log", "/ui/audit-log"), ("user", "/ui/users/observer1"),
                           ("account", "/ui/account")):
            await narrow.goto(f"{url}{path}")
            assert await narrow.evaluate("document.documentElement.scrollWidth") <= 320, path
            await check_page(narrow, shots, f"{name}-320px")
    assert "DEV/GOV/1002/sneaky" not in {str(c.id) for c in await ss2.store.list_clients()}
    assert (await ss2.store.get_service(ServiceId.parse(PERSONS, encoded=False))).url != "http://127.0.0.1:9/"
    assert await ss2.admin_store.find_user("intruder") is None
    _, refused = await ss2.admin_store.list_audit(AUDIT_PAGE, actor="observer1", result="refused")
    assert refused >= 10


async def test_operator_adds_a_client_and_an_access_right_then_the_exchange_succeeds(
    world: World, tmp_path: Path,
) -> None:
    shots = Shots(tmp_path, "operator")
    new = "DEV/GOV/1001/webclient"
    async with chromium() as browser:
        page = await (await new_context(browser)).new_page()
        url1 = world.url("ss1")
        await log_in(page, url1, "admin", world.password("ss1"))
        # (1) the client, on the consumer's server: with the keyboard alone, from the page's first field
        await page.goto(f"{url1}/ui/clients")
        for _ in range(60):
            if await page.evaluate("document.activeElement.id") == "add-id":
                break
            await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "add-id"
        await page.keyboard.type(new)
        await page.keyboard.press("Tab")  # status
        await page.keyboard.type("registered")
        await page.keyboard.press("Tab")  # IS authentication
        await page.keyboard.type("none")
        await page.keyboard.press("Tab")  # body logging (left on)
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Add client"
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("status")).to_contain_text(f"Client {new} added.")
        await expect(page.get_by_role("table")).to_contain_text(new)
        # its registration at the central server: sent from the client's page, approved there (the central
        # server's own pages are tested with them), then in the published global configuration
        await page.get_by_role("link", name=new).click()
        await page.get_by_role("button", name="Send registration request").click()
        await expect(page.get_by_role("status")).to_contain_text("submitted at the central server")
        await check_page(page, shots, "client-registered")
        [pending] = [r for r in await registration.list_requests(world.fed.central.engine, state="submitted")
                     if r.client == new]
        await registration.approve(world.fed.central.engine, pending.id, instance="DEV", officer="officer1",
                                   now=datetime.now(UTC))
        await world.fed.publish_and_refresh()
        await page.goto(f"{url1}/ui/clients")
        # a bad identifier is told beside its field
        await page.get_by_label("Identifier").fill("DEV/GOV")
        await page.get_by_role("button", name="Add client").click()
        await expect(page.locator("#add-id-error")).to_contain_text("Client.")
        await expect(page.get_by_label("Identifier")).to_have_attribute("aria-invalid", "true")
        await check_page(page, shots, "clients-error")
        refused = await exchange(world.fed, new, "web-ui-before-grant")
        assert refused.status >= 400 and "AccessDenied" in (refused.headers.get("X-Road-Error") or "")
        # (2) the access right, on the provider's server
        url2 = world.url("ss2")
        await log_in(page, url2, "admin", world.password("ss2"))
        await page.goto(f"{url2}{PERSONS_PAGE}")
        grant = page.locator("form", has=page.get_by_role("heading", name="Grant access"))
        await grant.get_by_label("Subject").fill(f"SUBSYSTEM:{new}")
        await grant.get_by_role("button", name="Grant access").click()
        await expect(page.get_by_role("status")).to_contain_text(f"Access granted to SUBSYSTEM:{new}.")
        await expect(page.get_by_role("table", name=re.compile("Access rights"))).to_contain_text(new)
        await check_page(page, shots, "service-granted")
    # (3) the exchange
    ok = await exchange(world.fed, new, "web-ui-after-grant")
    assert ok.status == 200, ok.headers.get("X-Road-Error")


async def test_auditor_finds_the_exchange_verifies_its_proof_and_the_archive(world: World, tmp_path: Path) -> None:
    shots = Shots(tmp_path, "auditor")
    ss1 = world.fed.server("ss1")
    url = world.url("ss1")
    resp = await exchange(world.fed, CONSUMER, "web-ui-audit-1")
    assert resp.status == 200
    assert ss1.checkpointer is not None
    round_ = await ss1.checkpointer.run_once(world.clock(), force=True)
    assert round_.checkpoint is not None and round_.stamped
    await ss1.admin_store.add_user("auditor1", "auditor password 1", frozenset({"auditor"}), now=world.clock())
    async with chromium() as browser:
        ctx = await new_context(browser)
        page = await ctx.new_page()
        await log_in(page, url, "auditor1", "auditor password 1")
        await check_page(page, shots, "dashboard")
        await page.get_by_role("navigation", name="Pages").get_by_role("link", name="Message log").click()
        search = page.locator("form", has=page.get_by_role("heading", name="Search"))
        await search.get_by_label("Message id (X-Road-Id)").fill("web-ui-audit-1")
        await search.get_by_role("button", name="Search").click()
        table = page.get_by_role("table", name=re.compile("Records found"))
        await expect(table).to_contain_text("web-ui-audit-1")
        await expect(table.locator("caption")).to_contain_text("2 in all")  # the consumer's request and response
        await check_page(page, shots, "messagelog-search")
        # a bad time is told beside its field
        await page.goto(f"{url}/ui/messagelog?from=yesterday")
        await expect(page.locator("#search-from-error")).to_contain_text("is not a time")
        # the record, its signature and its proof
        await page.goto(f"{url}/ui/messagelog?message_id=web-ui-audit-1")
        await page.get_by_role("table", name=re.compile("Records found")).locator("tbody a").first.click()
        await expect(page.get_by_role("status")).to_contain_text("Inclusion proof verified")
        await expect(page.locator("main")).to_contain_text("Checkpoint signature verifies")
        await expect(page.locator("main")).to_contain_text("Development TSA")
        await expect(page.get_by_role("heading", name="Signing certificate")).to_be_visible()
        await check_page(page, shots, "record")
        # the archive, verified offline by `gateway log verify` against the anchor alone
        await page.goto(f"{url}/ui/messagelog")
        async with page.expect_download() as info:
            await page.get_by_role("button", name="Download archive").click()
        download = await info.value
        archive = tmp_path / "archive.zip"
        await download.save_as(archive)
        # the same, prepared in the background: its progress page, then its download
        job = page.locator("form", has=page.get_by_role("heading", name="Prepare a large archive"))
        await job.get_by_role("button", name="Prepare archive").click()
        await expect(page.get_by_role("heading", name="Archive job")).to_be_visible()
        await expect(page.get_by_role("status")).to_contain_text("The archive is ready", timeout=30_000)
        await check_page(page, shots, "archive-job")
        async with page.expect_download() as info:
            await page.get_by_role("link", name="Download the archive").click()
        prepared = tmp_path / "prepared.zip"
        await (await info.value).save_as(prepared)
        # at 320 px wide the page still fits
        narrow = await (await new_context(browser, width=320)).new_page()
        await log_in(narrow, url, "auditor1", "auditor password 1")
        await narrow.goto(f"{url}/ui/messagelog?message_id=web-ui-audit-1")
        assert await narrow.evaluate("document.documentElement.scrollWidth") <= 320
        await check_page(narrow, shots, "messagelog-320px")
    for path in (archive, prepared):
        rc, out, err = await run_cli("log", "verify", str(path), "--anchor", str(world.fed.anchor_path))
        assert rc == 0, out + err
    entries, _ = await ss1.admin_store.list_audit(AUDIT_PAGE, actor="auditor1")
    assert {"listMessageLogRecords", "exportMessageLogRecord", "exportMessageLogArchive"} <= {e.action for e in entries}


async def test_security_officer_renews_the_signing_key_through_the_keys_page(tmp_path: Path) -> None:
    """Token log-in, a new signing key, its CSR downloaded, the certificate (issued by the demo's CA, as a CA
    would) imported and activated, all through the keys page; exchanges go on with the new certificate."""
    shots = Shots(tmp_path, "keys")
    fed = await start_federation(tmp_path / "fed", key_store="token")
    try:
        creds = json.loads(Path(fed.describe()["admin_credentials"]).read_text())["servers"]
        ss1 = fed.server("ss1")
        entry = creds[str(ss1.server_id)]
        url = entry["admin_url"]
        assert ss1.token is not None
        ss1.token.logout()  # as after a restart without the PIN: the officer logs in through the page
        pin = (ss1.files.dir / "token.pin").read_text().strip()
        async with chromium() as browser:
            page = await (await new_context(browser)).new_page()
            await log_in(page, url, "admin", entry["password"])
            await page.goto(f"{url}/ui/keys")
            await expect(page.locator("main")).to_contain_text("not logged in")
            await check_page(page, shots, "token-logged-out")
            await page.locator("#pin-pin").fill("wrong pin 0000")
            await page.get_by_role("button", name="Log in to the token").click()
            await expect(page.locator("#pin-pin-error")).to_contain_text("Signer.PinIncorrect")
            await page.locator("#pin-pin").fill(pin)
            await page.get_by_role("button", name="Log in to the token").click()
            await expect(page.get_by_role("status")).to_contain_text("Token logged in.")
            generate = page.locator("form", has=page.get_by_role("heading", name="Generate a key"))
            await generate.get_by_label("Label").fill("signing 2")
            await generate.get_by_role("button", name="Generate key").click()
            await expect(page.get_by_role("status")).to_contain_text("A new sign key was generated.")
            key = page.locator("section", has=page.get_by_role("heading", name="sign key signing 2"))
            async with page.expect_download() as info:
                await key.get_by_role("button", name="Download a certificate request (CSR)").click()
            csr_path = tmp_path / "sign.csr.pem"
            await (await info.value).save_as(csr_path)
            csr = x509.load_pem_x509_csr(csr_path.read_bytes())
            cert = fed.ca.issue(csr, kind="sign", expected_identity=ss1.server_id.owner, now=datetime.now(UTC))
            imp = page.locator("form", has=page.get_by_role("heading", name="Import a certificate"))
            await imp.get_by_label("Certificate (PEM)").fill(keys.cert_pem(cert))
            await imp.get_by_role("button", name="Import certificate").click()
            await expect(page.get_by_role("status")).to_contain_text("Certificate imported.")
            await key.get_by_role("button", name=re.compile("^Activate")).click()
            await expect(page.get_by_role("status")).to_contain_text("Certificate activated.")
            await expect(key.get_by_role("table")).to_contain_text("(in use)")
            await check_page(page, shots, "keys")
            await page.get_by_role("button", name="Log out of the token").click()
            await expect(page.get_by_role("status")).to_contain_text("Token logged out")
            await expect(page.get_by_role("table", name=re.compile("Tokens"))).to_contain_text("not logged in")
        resp = await exchange(fed, CONSUMER, "web-ui-after-renewal")
        assert resp.status == 200
        assert ss1.context is not None
        assert ss1.context.signer.cert.fingerprint(hashes.SHA256()) == cert.fingerprint(hashes.SHA256())
    finally:
        await fed.close()
