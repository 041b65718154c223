"""``gateway demo --processes`` with the citizen portal: the portal runs as ``gateway portal serve``, a process of
its own named in ``federation.json`` (the development identity provider stays in the demo's process), answers
at the URL ``federation.json`` gives, signs a test citizen in through the provider, and shows the citizen's
exchange, made through the security server processes, recorded by both sides and proven on both."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from demo_kit import demo_process
from portal_kit import jar, sign_in
from process_kit import alive, checkpointed, wait_until

from gateway.dev.idp import CITIZENS

pytestmark = pytest.mark.e2e

CONSUMER = "DEV/GOV/1001/consumer"
PERSONS = "DEV/GOV/1002/registry/persons"
MESSAGE_ID = "demo-processes-portal-1"


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def row(page: str, message_id: str) -> str:
    """The text of the usage page's row of ``message_id`` (tags dropped), or "" when there is none."""
    found = re.search(rf'<tr[^>]*data-message-id="{re.escape(message_id)}"[^>]*>(.*?)</tr>', page, re.S)
    return "" if found is None else " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


async def test_the_portal_process_signs_a_citizen_in_and_shows_their_proven_exchange(tmp_path: Path) -> None:
    citizen, other = CITIZENS[0].subject, CITIZENS[1].subject
    async with demo_process(tmp_path, "--processes", "--set", "checkpoint_interval_seconds=1") as demo:
        # (1) the portal is a part of its own: a child of the demo, started with the command federation.json gives
        portal = demo.desc["portal"]
        part = demo.desc["processes"]["portal"]
        assert alive(part["pid"]) and _parent(part["pid"]) == demo.proc.pid
        assert part["argv"][-2:] == ["portal", "serve"] and f"portal {part['pid']}" in demo.banner
        url = portal["url"]
        async with aiohttp.ClientSession(cookie_jar=jar()) as http:
            async with http.get(f"{url}/") as r:
                assert r.status == 200 and "Sign in" in await r.text()
            # (2) an exchange about the citizen through the security server processes, under a timestamped
            #     checkpoint on both (every second here)
            headers = {"X-Road-Client": CONSUMER, "X-Road-Id": MESSAGE_ID, "X-Road-Data-Subject": citizen,
                       "X-Road-Purpose": "TAX"}
            async with http.get(f"{demo.server('ss1')['client_url']}/r1/{PERSONS}/?limit=1", headers=headers) as r:
                assert r.status == 200, await r.text()
            for code in ("ss1", "ss2"):
                server = demo.server(code)
                await wait_until(lambda s=server: checkpointed(s["database_url"], [s["id"]]), timeout=30,
                                 what=f"{code}'s records all checkpointed")
            # (3) the citizen signs in through the provider and sees it, both sides proven (by the portal process's
            #     own check against the anchor)
            r = await sign_in(http, url, citizen)
            assert r.status == 200, await r.text()
            async with http.get(f"{url}/usage") as r:
                page = await r.text()
                assert r.status == 200, page
            text = row(page, MESSAGE_ID)
            assert "both sides" in text and "consumer: proven" in text and "provider: proven" in text, text
            assert "Tax assessment" in text
        # (4) another citizen sees none of it
        async with aiohttp.ClientSession(cookie_jar=jar()) as http:
            assert (await sign_in(http, url, other)).status == 200
            async with http.get(f"{url}/usage") as r:
                page = await r.text()
                assert r.status == 200 and other in page, page
            assert row(page, MESSAGE_ID) == ""
