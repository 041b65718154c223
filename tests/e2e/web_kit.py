"""What the web interface's browser tests share: Debian's Chromium driven by Playwright, axe-core injected into
each page, screenshots, logging in through the form.

Chromium is ``/usr/bin/chromium`` and axe-core is ``.axe/node_modules/axe-core/axe.min.js`` in the project; both
are installed by ``scripts/test``, and a test fails (never skips) when either is missing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, async_playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / ".axe" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
NAV_TIMEOUT_MS = 15_000  # one page load or click on loopback


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: scripts/test installs Debian's chromium package"
    assert AXE.exists(), f"{AXE} is missing: scripts/test installs axe-core with npm"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class Shots:
    """Screenshots into ``<tmp>/screenshots`` and, when ``GATEWAY_SCREENSHOTS=DIR`` is set, into DIR too."""

    def __init__(self, tmp: Path, prefix: str) -> None:
        self.dirs = [tmp / "screenshots"]
        extra = os.environ.get("GATEWAY_SCREENSHOTS")
        if extra:
            self.dirs.append(Path(extra))
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.taken: list[Path] = []

    async def take(self, page: Page, name: str) -> None:
        data = await page.screenshot(full_page=True)
        for d in self.dirs:
            path = d / f"{self.prefix}-{name}.png"
            path.write_bytes(data)
            self.taken.append(path)


async def new_context(browser: Browser, *, width: int = 1024) -> BrowserContext:
    # bypass_csp: the pages forbid inline scripts; axe-core is injected by the test, not served
    ctx = await browser.new_context(viewport={"width": width, "height": 900}, bypass_csp=True, accept_downloads=True)
    ctx.set_default_timeout(NAV_TIMEOUT_MS)
    return ctx


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.1 A/AA violations on the page as it is now, of every impact."""
    await page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = await page.evaluate(
        """async (tags) => {
            const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                           nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}));
        }""",
        WCAG,
    )
    return found


async def check_page(page: Page, shots: Shots, name: str) -> None:
    """No serious or critical axe-core violation on the page; then its screenshot, with every violation axe
    found (of any impact) beside it in ``<name>.axe.json`` for a person to review."""
    found = await axe_violations(page)
    for d in shots.dirs:
        (d / f"{shots.prefix}-{name}.axe.json").write_text(json.dumps({"url": page.url, "violations": found}, indent=1))
    bad = [v for v in found if v["impact"] in ("serious", "critical")]
    assert not bad, f"{name} ({page.url}): {json.dumps(bad, indent=1)}"
    await shots.take(page, name)


async def log_in(page: Page, admin_url: str, username: str, password: str) -> None:
    await page.goto(f"{admin_url}/ui/login")
    await page.get_by_label("User name").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(re.compile(r".*/ui/dashboard$"))


async def csrf_of(page: Page) -> str:
    """The session's CSRF token, as every form of the page carries it."""
    value = await page.locator("input[name=_csrf]").first.get_attribute("value")
    assert value
    return value


__all__ = ["AXE", "CHROMIUM", "Shots", "axe_violations", "check_page", "chromium", "csrf_of", "log_in",
           "new_context"]
