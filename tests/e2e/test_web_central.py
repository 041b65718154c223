"""The central server's web interface in a real browser (Playwright driving Debian's Chromium) against one
federation started as ``gateway demo`` starts one (:func:`gateway.dev.demo.start_federation`), for the module.

Journeys: every central page for the demo's ``admin`` (every role), checked by axe-core (no serious or critical
WCAG 2.1 A/AA violation) and screenshotted, also at 320 px wide; an observer who sees the pages but whose every
change is refused by the server even when posted by hand, and a form without its CSRF token refused; the
operator adding agency C through the pages: its member and subsystem in the central pages; on its security
server's keys page an authentication and a signing key, their CSRs downloaded, the certificates (signed by the
dev CA, the one step outside the web interface) imported and activated on a server that started with an
empty token (no key at all: uninitialised, docs/operations.md); its registration requests sent with the
buttons of its keys and client pages and approved in the central pages by a registration officer (who sees
the requester's signature verified); an access right on the provider's service page; then an exchange from C
succeeds, signed and authenticated with the certificates made through the pages.

Screenshots go to ``<tmp>/screenshots`` and to ``GATEWAY_SCREENSHOTS`` when set (``web_kit.Shots``).
"""

from __future__ import annotations

import html
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from cryptography import x509
from playwright.async_api import Browser, Page, expect
from process_kit import PERSONS
from web_kit import Shots, check_page, chromium, csrf_of, log_in, new_context

from gateway.admin.roles import ROLES
from gateway.admin.schema import Page as ListPage
from gateway.central import registry
from gateway.dev.demo import Federation, start_federation
from gateway.files import private_dir, write_private_text
from gateway.identifiers import SecurityServerId, ServiceId
from gateway.server.keyfiles import KeyFiles
from gateway.server.runtime import SecurityServer
from gateway.settings import GlobalConfSettings, ServerSettings, Settings
from gateway.token.soft import SoftToken
from gateway.trust import keys

DASH = "\u2013"  # the en dash of "showing 1\u20132"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180), pytest.mark.asyncio(loop_scope="module")]

AUDIT_PAGE = ListPage(limit=200)
OBSERVER = ("olive", "observer password 1")
OFFICER = ("olga", "registration officer password")
PERSONS_PAGE = "/ui/services/" + ServiceId.parse(PERSONS, encoded=False).encoded_id()
SESSION_COOKIE = "gw_central_session"
SS3 = SecurityServerId.parse("DEV/GOV/1003/ss3")
CLIENT3 = "DEV/GOV/1003/client3"


@dataclass
class World:
    fed: Federation
    url: str  # the central admin port
    password: str  # the demo's central `admin`
    ss_creds: dict[str, dict[str, str]]  # server code -> admin_url, username, password


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    fed = await start_federation(tmp_path_factory.mktemp("central-web") / "fed", key_store="token")
    try:
        creds = json.loads(Path(fed.describe()["admin_credentials"]).read_text())
        central = creds["central"]
        assert central["admin_url"] == fed.describe()["central"]["admin_url"]
        assert fed.central_admin is not None
        store, now = fed.central_admin.ctx.store, datetime.now(UTC)
        await store.add_user(OBSERVER[0], OBSERVER[1], frozenset({"observer"}), now=now)
        await store.add_user(OFFICER[0], OFFICER[1], frozenset({"registration-officer"}), now=now)
        servers = {sid.rsplit("/", 1)[1]: entry for sid, entry in creds["servers"].items()}
        yield World(fed=fed, url=central["admin_url"], password=central["password"], ss_creds=servers)
    finally:
        await fed.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One Chromium for the module; each user of a test has a browser context of their own."""
    async with chromium() as b:
        yield b


async def _signed_in(browser: Browser, url: str, username: str, password: str, *, width: int = 1024) -> Page:
    page = await (await new_context(browser, width=width)).new_page()
    await log_in(page, url, username, password)
    return page


CENTRAL_PAGES = (
    ("dashboard", "/ui/dashboard"), ("members", "/ui/members"), ("subsystems", "/ui/subsystems"),
    ("servers", "/ui/servers"), ("requests", "/ui/registration-requests"), ("groups", "/ui/global-groups"),
    ("trust", "/ui/trust-services"), ("signing-keys", "/ui/signing-keys"), ("versions", "/ui/globalconf"),
    ("users", "/ui/users"), ("audit-log", "/ui/audit-log"), ("account", "/ui/account"),
    ("witness-policies", "/ui/witness-policies"),
    ("witness-policy-form", "/ui/witness-policies?server=DEV:GOV:1001:ss1"),
)
NARROW_SHOTS = {"members", "servers", "requests", "trust", "users"}  # axe-core and a screenshot at 320 px too


async def test_every_central_page_forms_and_the_session(world: World, browser: Browser, tmp_path: Path) -> None:
    shots = Shots(tmp_path, "central")
    url = world.url
    page = await (await new_context(browser)).new_page()
    # without a session a page sends the browser to the log-in form, which comes back to it
    await page.goto(f"{url}/ui/members")
    await expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/members$"))
    await expect(page).to_have_title("Log in · central server")
    await check_page(page, shots, "login")
    await page.get_by_label("User name").fill("admin")
    await page.get_by_label("Password").fill(world.password)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(re.compile(r"/ui/members$"))
    [cookie] = [c for c in await page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    for name, path in CENTRAL_PAGES:
        await page.goto(f"{url}{path}")
        await check_page(page, shots, name)
    # tables sort on the server: members by name, descending
    await page.goto(f"{url}/ui/members?sort=name&dir=desc")
    names = await page.get_by_role("table").locator("tbody tr td:nth-child(2)").all_inner_texts()
    assert names == sorted(names, reverse=True) and len(names) == 2
    # the audit log: newest first; its "No." header link sorts it oldest first, and says so to assistive
    # technology; the pager pages on in that order
    await page.goto(f"{url}/ui/audit-log?limit=1")  # two entries so far: both log-ins
    number = page.get_by_role("columnheader", name=re.compile("^No."))
    await expect(number).to_have_attribute("aria-sort", "descending")
    await number.get_by_role("link").click()
    await expect(number).to_have_attribute("aria-sort", "ascending")
    first = [int(n) for n in await page.get_by_role("table").locator("tbody tr td:nth-child(1)").all_inner_texts()]
    assert first == [1]
    await page.get_by_role("link", name="Next page").click()
    await expect(page.get_by_role("table")).to_contain_text(re.compile(rf"in all, showing 2{DASH}2"))
    await check_page(page, shots, "audit-log-oldest-first")
    # bad addresses are told in words, with the X-Road type
    for path, status, words in (
        ("/ui/members?sort=bogus", 400, "sort column 'bogus' is not one of id, name"),
        ("/ui/members?dir=up", 400, "sort direction 'up' must be asc or desc"),
        ("/ui/registration-requests?state=bogus", 400, "state 'bogus' is not one of submitted, approved, rejected"),
        ("/ui/registration-requests/abc", 400, "request_id 'abc' is not a positive integer"),
        ("/ui/registration-requests/999", 404, "999"),
        ("/ui/members/DEV:GOV:9999", 404, "member DEV/GOV/9999 is not registered"),
        ("/ui/nothing-here", 404, "there is no page /ui/nothing-here"),
    ):
        resp = await page.request.get(f"{url}{path}")
        text = html.unescape(await resp.text())
        assert resp.status == status and words in text and ("Client." in text or "Server." in text), (path, text)
    # one member, one server, one group, one request page
    await page.goto(f"{url}/ui/members")
    await page.get_by_role("link", name="DEV/GOV/1001").click()
    await expect(page.get_by_role("heading", name="Member DEV/GOV/1001")).to_be_visible()
    await check_page(page, shots, "member")
    await page.goto(f"{url}/ui/servers")
    await page.get_by_role("link", name="DEV/GOV/1002/ss2").click()
    await expect(page.get_by_role("heading", name="Security server DEV/GOV/1002/ss2")).to_be_visible()
    await check_page(page, shots, "server")
    # a global group through its form, then its page; a bad identifier is told beside its field
    await page.goto(f"{url}/ui/global-groups")
    add = page.locator("form", has=page.get_by_role("heading", name="Add a global group"))
    await add.get_by_label("Group identifier").fill("OTHER/tax-offices")
    await add.get_by_label("Description").fill("Tax offices")
    await add.get_by_role("button", name="Add global group").click()
    await expect(page.locator("#add-id-error")).to_contain_text("instance")
    await expect(page.get_by_label("Group identifier")).to_have_attribute("aria-invalid", "true")
    await check_page(page, shots, "groups-error")
    await page.get_by_label("Group identifier").fill("DEV/tax-offices")
    await page.get_by_role("button", name="Add global group").click()
    await expect(page.get_by_role("status")).to_contain_text("Global group DEV/tax-offices added.")
    await page.get_by_role("link", name="DEV/tax-offices").click()
    member = page.locator("form", has=page.get_by_role("heading", name="Add a member"))
    await member.get_by_label("Member or subsystem").fill("DEV/GOV/1001/consumer")
    await member.get_by_role("button", name="Add to the group").click()
    await expect(page.get_by_role("status")).to_contain_text("DEV/GOV/1001/consumer added to the group.")
    await check_page(page, shots, "group")
    # a central admin user and an API key through the users page; the user's own page
    await page.goto(f"{url}/ui/users")
    adduser = page.locator("form", has=page.get_by_role("heading", name="Add a user"))
    await adduser.get_by_label("User name").fill("rhea")
    await adduser.get_by_label("Password").fill("short")
    await adduser.get_by_label("registration-officer").check()
    await adduser.get_by_role("button", name="Add user").click()
    await expect(page.locator("#user-password-error")).to_contain_text("Client.BadRequest")
    await check_page(page, shots, "users-error")
    adduser = page.locator("form", has=page.get_by_role("heading", name="Add a user"))
    await adduser.get_by_label("Password").fill("rhea's long password")
    await adduser.get_by_role("button", name="Add user").click()
    await expect(page.get_by_role("status")).to_contain_text("User rhea added.")
    newkey = page.locator("form", has=page.get_by_role("heading", name="Create an API key"))
    await newkey.get_by_label("Name").fill("registry export")
    await newkey.get_by_label("observer").check()
    await newkey.get_by_role("button", name="Create API key").click()
    await expect(page.get_by_role("status")).to_contain_text("Copy it now: it is shown only once.")
    await check_page(page, shots, "users-new-key")
    await page.get_by_role("link", name="rhea", exact=True).click()
    await expect(page.get_by_role("heading", name="User rhea")).to_be_visible()
    await check_page(page, shots, "user")
    # at 320 px wide every page still fits (a wide table scrolls inside its own region)
    narrow = await _signed_in(browser, url, "admin", world.password, width=320)
    for name, path in CENTRAL_PAGES:
        await narrow.goto(f"{url}{path}")
        assert await narrow.evaluate("document.documentElement.scrollWidth") <= 320, path
        if name in NARROW_SHOTS:
            await check_page(narrow, shots, f"{name}-320px")
    # log-out ends the session: the old cookie no longer opens a page
    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(re.compile(r"/ui/login\?reason=You\+have\+logged\+out\.$"))
    await page.context.add_cookies([{**cookie}])  # type: ignore[list-item]
    await page.goto(f"{url}/ui/members")
    await expect(page).to_have_url(re.compile(r"/ui/login\?"))
    # the changes are in the audit log as the REST API's are, by operation
    entries, _ = await world.fed.central_admin.ctx.store.list_audit(AUDIT_PAGE, actor="admin")  # type: ignore[union-attr]
    actions = {e.action for e in entries}
    assert {"addGlobalGroup", "addGlobalGroupMember", "addUser", "createApiKey", "logout"} <= actions


async def test_observer_sees_the_pages_but_every_change_is_refused(
    world: World, browser: Browser, tmp_path: Path,
) -> None:
    shots = Shots(tmp_path, "central-observer")
    url = world.url
    engine = world.fed.central.engine
    page = await _signed_in(browser, url, *OBSERVER)
    nav = page.get_by_role("navigation", name="Pages")
    await expect(nav.get_by_role("link", name="Audit log")).to_have_count(0)
    await expect(nav.get_by_role("link", name="Users and API keys")).to_have_count(0)
    await page.goto(f"{url}/ui/members")
    await expect(page.get_by_role("table")).to_contain_text("DEV/GOV/1001")
    await expect(page.get_by_role("heading", name="Add a member")).to_have_count(0)
    await page.goto(f"{url}/ui/signing-keys")
    await expect(page.get_by_role("button", name="Generate signing key")).to_have_count(0)
    await check_page(page, shots, "signing-keys")
    await page.goto(f"{url}/ui/trust-services")
    await expect(page.get_by_role("heading", name="Trust a certification authority")).to_have_count(0)
    await check_page(page, shots, "trust")
    token = await csrf_of(page)
    for path, form in (
        ("/ui/members", {"id": "DEV/GOV/6666", "name": "Sneaky"}),
        ("/ui/members/DEV:GOV:1001/subsystems", {"code": "sneaky"}),
        ("/ui/servers", {"id": "DEV/GOV/1001/ss9", "address": "127.0.0.1:9"}),
        ("/ui/global-groups", {"id": "DEV/sneaky", "description": "Sneaky"}),
        ("/ui/signing-keys", {}),
        ("/ui/trust-services/tsas/DEV%20Development%20TSA/remove", {}),
        ("/ui/globalconf/publish", {}),
    ):
        resp = await page.request.post(f"{url}{path}", form={**form, "_csrf": token})
        assert resp.status == 403, path
        assert "olive (roles: observer) may not call" in await resp.text(), path
    await page.goto(f"{url}/ui/audit-log")
    await expect(page.get_by_role("alert")).to_contain_text("may not call listAuditLog")
    await check_page(page, shots, "refused")
    # a form without the session's CSRF token is refused before anything is read, even for the admin
    admin = await _signed_in(browser, url, "admin", world.password)
    resp = await admin.request.post(f"{url}/ui/members", form={"id": "DEV/GOV/7777", "name": "Forged"})
    assert resp.status == 403
    assert "anti-forgery (CSRF) token" in await resp.text()
    resp = await admin.request.post(f"{url}/ui/members", form={"id": "DEV/GOV/7777", "name": "Forged",
                                                                "_csrf": "0" * 64})
    assert resp.status == 403
    assert {str(m.id) for m in await registry.list_members(engine)} >= {"DEV/GOV/1001", "DEV/GOV/1002"}
    assert not {"DEV/GOV/6666", "DEV/GOV/7777"} & {str(m.id) for m in await registry.list_members(engine)}
    assert "DEV/sneaky" not in {str(g.id) for g in await registry.list_groups(engine)}
    assert len(await registry.list_tsas(engine)) == 1
    store = world.fed.central_admin.ctx.store  # type: ignore[union-attr]
    _, refused = await store.list_audit(AUDIT_PAGE, actor="olive", result="refused")
    assert refused >= 8
    _, forged = await store.list_audit(AUDIT_PAGE, actor="admin", result="refused")
    assert forged >= 2


async def _start_agency_c(fed: Federation, workdir: Path) -> SecurityServer:
    """Agency C's security server as installed, on free ports, not yet known to the central server: its
    software token made by `gateway token init` and nothing else, no key and no certificate. It starts
    uninitialised (exchanges refused with NotConfigured, readiness 503: docs/operations.md), so every key and
    certificate the exchange uses is made through the pages."""
    files = KeyFiles(dir=workdir / "ss3")
    private_dir(files.dir)
    pin = secrets.token_urlsafe(18)
    write_private_text(files.dir / "token.pin", pin + "\n")
    (await SoftToken.init(files.dir / "token", pin)).logout()
    token = {"token_dir": str(files.dir / "token"), "token_pin_file": str(files.dir / "token.pin")}
    settings = Settings(
        central=fed.central.settings,
        server=ServerSettings(id=str(SS3), database_url=f"sqlite+aiosqlite:///{workdir / 'ss3.db'}",
                              state_dir=str(files.dir), client_port=0, client_https_port=0, server_port=0,
                              admin_port=0, ops_port=0, **token),
        globalconf=GlobalConfSettings(anchor=str(fed.anchor_path), cache_dir=str(workdir / "ss3" / "globalconf")),
    )
    ss3 = SecurityServer(settings)
    await ss3.start()
    return ss3


async def _key_through_the_page(operator: Page, fed: Federation, usage: str, label: str) -> x509.Certificate:
    """A key generated on the keys page, its CSR downloaded from the page, the certificate imported and
    activated there. Signing the CSR is the one step outside the web interface: the CA is another
    organisation (here the federation's dev CA, called directly)."""
    generate = operator.locator("form", has=operator.get_by_role("heading", name="Generate a key"))
    await generate.get_by_label("Usage").select_option(usage)
    await generate.get_by_label("Label").fill(label)
    await generate.get_by_role("button", name="Generate key").click()
    await expect(operator.get_by_role("status")).to_contain_text(f"A new {usage} key was generated.")
    key = operator.locator("section", has=operator.get_by_role("heading", name=f"{usage} key {label}"))
    await key.get_by_label("Organisation name").fill("Agency C")
    async with operator.expect_download() as info:
        await key.get_by_role("button", name="Download a certificate request (CSR)").click()
    csr = x509.load_pem_x509_csr(Path(await (await info.value).path()).read_bytes())
    # outside the web interface: the CA checks the identity the CSR asks for and signs it
    cert = fed.ca.issue(csr, kind=usage, expected_identity=SS3 if usage == "auth" else SS3.owner,  # type: ignore[arg-type]
                        now=datetime.now(UTC))
    imp = operator.locator("form", has=operator.get_by_role("heading", name="Import a certificate"))
    await imp.get_by_label("Certificate (PEM)").fill(keys.cert_pem(cert))
    await imp.get_by_role("button", name="Import certificate").click()
    await expect(operator.get_by_role("status")).to_contain_text("Certificate imported.")
    await key.get_by_role("button", name=re.compile("^Activate")).click()
    await expect(operator.get_by_role("status")).to_contain_text("Certificate activated.")
    return cert


async def _sent_request(page: Page) -> int:
    """The number of the registration request the page says it sent."""
    status = page.get_by_role("status")
    await expect(status.or_(page.get_by_role("alert"))).to_be_visible()
    assert await status.count() == 1, await page.get_by_role("alert").all_inner_texts()
    note = await status.inner_text()
    m = re.search(r"Registration request (\d+) sent: submitted", note)
    assert m, note
    return int(m.group(1))


async def _approve(page: Page, url: str, request_id: int, shots: Shots, name: str) -> None:
    await page.goto(f"{url}/ui/registration-requests?state=submitted")
    await page.get_by_role("link", name=f"Request {request_id}", exact=True).click()
    await expect(page.locator("main")).to_contain_text("Requester's signature")
    await expect(page.locator("main")).to_contain_text("verified at")
    await check_page(page, shots, name)
    await page.get_by_role("button", name=f"Approve request {request_id}").click()
    await expect(page.get_by_role("status")).to_contain_text("Request approved and applied to the registry.")
    await expect(page.locator("main")).to_contain_text("approved by olga")


async def test_operator_adds_agency_c_through_the_pages_then_an_exchange_succeeds(
    world: World, browser: Browser, tmp_path: Path,
) -> None:
    shots = Shots(tmp_path, "agency-c")
    url = world.url
    ss3 = await _start_agency_c(world.fed, tmp_path)
    try:
        assert ss3.token is not None and ss3.context is not None
        assert (await ss3.token.state()).keys == ()
        assert ss3.context.not_configured is not None  # uninitialised: no key at all
        await ss3.admin_store.add_user("admin", "ss3 admin password", frozenset(ROLES), now=datetime.now(UTC))
        # (1) the registration officer registers member C and its subsystem in the central pages
        officer = await _signed_in(browser, url, *OFFICER)
        await officer.goto(f"{url}/ui/members")
        add = officer.locator("form", has=officer.get_by_role("heading", name="Add a member"))
        await add.get_by_label("Member identifier").fill("DEV/GOV")
        await add.get_by_label("Name").fill("Agency C")
        await add.get_by_role("button", name="Add member").click()
        await expect(officer.locator("#add-id-error")).to_contain_text("Client.")
        await check_page(officer, shots, "members-error")
        await officer.get_by_label("Member identifier").fill(str(SS3.owner))
        await officer.get_by_role("button", name="Add member").click()
        await expect(officer.get_by_role("status")).to_contain_text(f"Member {SS3.owner} added.")
        await officer.get_by_role("link", name=str(SS3.owner)).click()
        # the subsystem with the keyboard alone: Tab to its field, type, Enter
        for _ in range(60):
            if await officer.evaluate("document.activeElement.id") == "subsystem-code":
                break
            await officer.keyboard.press("Tab")
        assert await officer.evaluate("document.activeElement.id") == "subsystem-code"
        await officer.keyboard.type("client3")
        await officer.keyboard.press("Enter")
        await expect(officer.get_by_role("status")).to_contain_text("Subsystem client3 added.")
        # (2) C's security officer on ss3's keys page: an authentication and a signing key, their CSRs and
        # certificates
        ss3_url = ss3.admin_url
        operator = await _signed_in(browser, ss3_url, "admin", "ss3 admin password")
        await operator.goto(f"{ss3_url}/ui/keys")
        auth_cert = await _key_through_the_page(operator, world.fed, "auth", "agency C auth")
        sign_cert = await _key_through_the_page(operator, world.fed, "sign", "agency C sign")
        assert {k.label for k in (await ss3.token.state()).keys} == {"agency C auth", "agency C sign"}
        await check_page(operator, shots, "ss3-keys")
        # (3) ss3 registers its authentication certificate with the button of its keys page; the registration
        # officer approves the request in the central pages
        await operator.get_by_role("button", name="Send registration request").click()
        auth_request = await _sent_request(operator)
        await check_page(operator, shots, "ss3-registration-sent")
        await _approve(officer, url, auth_request, shots, "request-auth-cert")
        # (4) the client on ss3's clients page, registered with the button of its page, approved, then marked
        # registered on ss3
        await operator.goto(f"{ss3_url}/ui/clients")
        client = operator.locator("form", has=operator.get_by_role("heading", name="Add a client"))
        await client.get_by_label("Identifier").fill(CLIENT3)
        await client.get_by_label("IS authentication").select_option("none")
        await client.get_by_role("button", name="Add client").click()
        await expect(operator.get_by_role("status")).to_contain_text(f"Client {CLIENT3} added.")
        await operator.get_by_role("link", name=CLIENT3).click()
        await operator.get_by_role("button", name="Send registration request").click()
        client_request = await _sent_request(operator)
        await check_page(operator, shots, "ss3-client-registration-sent")
        await _approve(officer, url, client_request, shots, "request-client")
        await officer.goto(f"{url}/ui/servers/{SS3.encoded_id()}")
        await expect(officer.locator("main")).to_contain_text(keys.cert_sha256_hex(auth_cert))
        await expect(officer.locator("main")).to_contain_text(CLIENT3)
        await check_page(officer, shots, "server-ss3")
        status = operator.locator("form", has=operator.get_by_role("heading", name="Status on this server"))
        await status.get_by_label("Status").select_option("registered")
        await status.get_by_role("button", name="Set status").click()
        await expect(operator.get_by_role("status")).to_contain_text("Client marked registered.")
        # (5) the access right on the provider's service page
        ss2 = world.ss_creds["ss2"]
        provider = await _signed_in(browser, ss2["admin_url"], "admin", ss2["password"])
        await provider.goto(f"{ss2['admin_url']}{PERSONS_PAGE}")
        grant = provider.locator("form", has=provider.get_by_role("heading", name="Grant access"))
        await grant.get_by_label("Subject").fill(f"SUBSYSTEM:{CLIENT3}")
        await grant.get_by_role("button", name="Grant access").click()
        await expect(provider.get_by_role("status")).to_contain_text(f"Access granted to SUBSYSTEM:{CLIENT3}.")
        # (6) the approvals published with the central server's "Publish now" (a system administrator), and
        # downloaded by the servers now rather than at their next poll
        await officer.goto(f"{url}/ui/dashboard")
        await check_page(officer, shots, "dashboard-after")
        sysadmin = await _signed_in(browser, url, "admin", world.password)
        await sysadmin.goto(f"{url}/ui/globalconf")
        await sysadmin.get_by_role("button", name="Publish now").click()
        await expect(sysadmin.get_by_role("status")).to_contain_text(re.compile(r"Version \d+ published"))
        for server in (*world.fed.servers.values(), ss3):
            await server.globalconf.refresh()
        await ss3.reload_keys()
        ok = await _exchange(ss3.client_url, CLIENT3, "agency-c-first")
        assert ok.status == 200, ok.headers.get("X-Road-Error")
        # signed and authenticated with the certificates made through the pages
        assert ss3.context is not None
        assert ss3.context.signer.cert == sign_cert and ss3.context.auth_cert == auth_cert
        # every step on ss3 is in its audit log, as the REST API's calls are
        done, _ = await ss3.admin_store.list_audit(AUDIT_PAGE, actor="admin")
        assert {"registerServer", "registerClient", "generateKey", "createCsr", "importCertificate",
                "activateCertificate", "setClientStatus"} <= {
            e.action for e in done}
    finally:
        await ss3.stop()
    entries, _ = await world.fed.central_admin.ctx.store.list_audit(AUDIT_PAGE, actor="olga")  # type: ignore[union-attr]
    assert [e.action for e in entries if e.action == "approveRegistrationRequest"] == [
        "approveRegistrationRequest"] * 2
    assert {"addMember", "addSubsystem"} <= {e.action for e in entries}


async def _exchange(client_url: str, client: str, message_id: str) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as http, http.get(
        f"{client_url}/r1/{PERSONS}/?limit=2",
        headers={"X-Road-Client": client, "X-Road-Id": message_id, "Accept": "application/json"},
    ) as resp:
        await resp.read()
        return resp



async def test_security_officer_rolls_the_signing_key_over_and_publishes(
    world: World, browser: Browser, tmp_path: Path,
) -> None:
    """Last in the module: the security servers hold the old anchor, so nothing may need a publication after
    the old key is retired."""
    shots = Shots(tmp_path, "central-keys")
    url = world.url
    page = await _signed_in(browser, url, "admin", world.password)
    # configuration-signing key rollover: generate (inactive), anchor, activate, retire the old one
    await page.goto(f"{url}/ui/signing-keys")
    await page.get_by_role("button", name="Generate signing key").click()
    await expect(page.get_by_role("status")).to_contain_text("A new signing key was generated")
    async with page.expect_download() as info:
        await page.get_by_role("link", name="anchor").click()
    anchor = json.loads(Path(await (await info.value).path()).read_text())
    assert anchor["instance"] == "DEV"
    await page.get_by_role("button", name="Activate key 2").click()
    await expect(page.get_by_role("status")).to_contain_text("signs from the next publication on")
    await page.get_by_role("button", name="Retire key 1").click()
    await expect(page.get_by_role("status")).to_contain_text("retired")
    await expect(page.get_by_role("table")).to_contain_text("retired")
    await check_page(page, shots, "signing-keys-rolled")
    # publishing now
    await page.goto(f"{url}/ui/globalconf")
    await page.get_by_role("button", name="Publish now").click()
    await expect(page.get_by_role("status")).to_contain_text(re.compile(r"Version \d+ published"))
    await page.goto(f"{url}/ui/dashboard")
    await expect(page.locator("main")).to_contain_text("1 active of 2")
    entries, _ = await world.fed.central_admin.ctx.store.list_audit(AUDIT_PAGE, actor="admin")  # type: ignore[union-attr]
    assert {"createSigningKey", "activateSigningKey", "retireSigningKey", "publishGlobalConf"} <= {
        e.action for e in entries}
