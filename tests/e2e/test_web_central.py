"""The central server's web interface in a real browser (Playwright driving Debian's Chromium) against one
federation started as ``gateway demo`` starts one (:func:`gateway.dev.demo.start_federation`), for the module.

Journeys: every central page for the demo's ``admin`` (every role), checked by axe-core (no serious or critical
WCAG 2.1 A/AA violation) and screenshotted, also at 320 px wide; an observer who sees the pages but whose every
change is refused by the server even when posted by hand, and a form without its CSRF token refused; the
operator adding agency C: its member and subsystem in the central pages, its security server's keys, CSRs and
certificates through that server's keys page, its registration requests approved in the central pages by a
registration officer (who sees the requester's signature verified), its client on its server's clients page,
an access right on the provider's service page, then an exchange from C succeeds.

Screenshots go to ``<tmp>/screenshots`` and to ``GATEWAY_SCREENSHOTS`` when set (``web_kit.Shots``).
"""

from __future__ import annotations

import json
import re
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

from gateway.admin.schema import Page as ListPage
from gateway.central import registration, registry
from gateway.dev.demo import Federation, start_federation
from gateway.identifiers import ServiceId

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180), pytest.mark.asyncio(loop_scope="module")]

AUDIT_PAGE = ListPage(limit=200)
OBSERVER = ("olive", "observer password 1")
OFFICER = ("olga", "registration officer password")
PERSONS_PAGE = "/ui/services/" + ServiceId.parse(PERSONS, encoded=False).encoded_id()
SESSION_COOKIE = "gw_central_session"


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


async def _signed_in(browser: Browser, url: str, username: str, password: str, *, width: int = 1024) -> Page:
    page = await (await new_context(browser, width=width)).new_page()
    await log_in(page, url, username, password)
    return page


CENTRAL_PAGES = (
    ("dashboard", "/ui/dashboard"), ("members", "/ui/members"), ("subsystems", "/ui/subsystems"),
    ("servers", "/ui/servers"), ("requests", "/ui/registration-requests"), ("groups", "/ui/global-groups"),
    ("trust", "/ui/trust-services"), ("signing-keys", "/ui/signing-keys"), ("versions", "/ui/globalconf"),
    ("audit-log", "/ui/audit-log"),
)


async def test_every_central_page_a_key_rollover_and_the_session(world: World, tmp_path: Path) -> None:
    shots = Shots(tmp_path, "central")
    url = world.url
    async with chromium() as browser:
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
        # at 320 px wide every page still fits (a wide table scrolls inside its own region)
        narrow = await _signed_in(browser, url, "admin", world.password, width=320)
        for name, path in CENTRAL_PAGES:
            await narrow.goto(f"{url}{path}")
            assert await narrow.evaluate("document.documentElement.scrollWidth") <= 320, path
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
    assert {"addGlobalGroup", "addGlobalGroupMember", "createSigningKey", "activateSigningKey", "retireSigningKey",
            "publishGlobalConf", "logout"} <= actions


async def test_observer_sees_the_pages_but_every_change_is_refused(world: World, tmp_path: Path) -> None:
    shots = Shots(tmp_path, "central-observer")
    url = world.url
    engine = world.fed.central.engine
    async with chromium() as browser:
        page = await _signed_in(browser, url, *OBSERVER)
        nav = page.get_by_role("navigation", name="Pages")
        await expect(nav.get_by_role("link", name="Audit log")).to_have_count(0)
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


async def _exchange(client_url: str, client: str, message_id: str) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as http, http.get(
        f"{client_url}/r1/{PERSONS}/?limit=2",
        headers={"X-Road-Client": client, "X-Road-Id": message_id, "Accept": "application/json"},
    ) as resp:
        await resp.read()
        return resp


__all__ = ["registration", "x509"]
