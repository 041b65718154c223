"""Tables of both web interfaces over real HTTP (no browser), on SQLite and PostgreSQL: server-side sort (the
``sort`` whitelist, ``dir``, ``aria-sort`` on the header) and paging (``limit``/``offset``, "n in all, showing
a-b", the pager's links) through the one helper (:func:`gateway.admin.web.render.table`); the audit log sorted
by number in both directions over every entry and by other columns among the newest; two tables on one page
with their own parameters. The browser's look at them is in tests/e2e/test_web_central.py."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from admin_kit import PASSWORD, admin_harness
from aiohttp.test_utils import make_mocked_request
from central_admin_kit import CentralAdmin, central_admin
from test_web_central_forms import browser, csrf, log_in, post

from gateway.admin.roles import ROLES
from gateway.admin.web.render import Column, table
from gateway.errors import RequestError

DASH = "\u2013"  # the en dash of "showing 1\u20132"

pytestmark = pytest.mark.integration

_ROW_ID = re.compile(r"<tr><td>(\d+)</td>")


@pytest_asyncio.fixture
async def c(database_url: str, tmp_path: Path) -> AsyncIterator[CentralAdmin]:
    async with central_admin(database_url, tmp_path) as harness:
        await harness.store.add_user("admin", PASSWORD, frozenset({"system-administrator", "registration-officer"}),
                                     now=datetime.now(UTC))
        yield harness


async def get(http: aiohttp.ClientSession, path: str) -> tuple[int, str]:
    async with http.get(path, allow_redirects=False) as resp:
        return resp.status, html.unescape(await resp.text())


def header(text: str, label: str) -> str:
    """The aria-sort of the column header ``label``."""
    m = re.search(rf'<th scope="col" aria-sort="(\w+)"><a href="[^"]*">{re.escape(label)}<', text)
    assert m, text
    return m.group(1)


async def test_audit_log_sorted_both_ways_over_every_entry_and_paged(c: CentralAdmin) -> None:
    async with browser(c) as http:
        assert (await log_in(http, "admin")).status == 303
        token = await csrf(http)
        for n in range(1, 6):  # five changes, each audited
            status, _, _ = await post(http, "/ui/members", {"_csrf": token, "id": f"DEV/GOV/10{n:02d}",
                                                            "name": f"Agency {n}"})
            assert status == 303
        ids = sorted(e.id for e in await c.audit())
        total = len(ids)
        assert total >= 6  # the log-in and five members
        # default: newest first, paged by the API
        status, text = await get(http, "/ui/audit-log?limit=2")
        assert status == 200 and header(text, "No.") == "descending"
        assert [int(i) for i in _ROW_ID.findall(text)] == ids[::-1][:2]
        assert f"Audit entries, newest first: {total} in all, showing 1{DASH}2" in text
        assert 'href="/ui/audit-log?limit=2&offset=2">Next page' in text
        # oldest first, over every entry: the first page, and the last one (shorter)
        status, text = await get(http, "/ui/audit-log?sort=id&dir=asc&limit=4")
        assert status == 200 and header(text, "No.") == "ascending"
        assert [int(i) for i in _ROW_ID.findall(text)] == ids[:4]
        last = (total - 1) // 4 * 4
        status, text = await get(http, f"/ui/audit-log?sort=id&dir=asc&limit=4&offset={last}")
        assert [int(i) for i in _ROW_ID.findall(text)] == ids[last:]
        assert f"showing {last + 1}{DASH}{total}" in text and "Next page" not in text and "Previous page" in text
        # with a filter: only the addMember entries, oldest first
        status, text = await get(http, "/ui/audit-log?action=addMember&sort=id&dir=asc")
        assert f"Audit entries, oldest first: 5 in all, showing 1{DASH}5" in text
        member_ids = sorted(e.id for e in await c.audit(action="addMember"))
        assert [int(i) for i in _ROW_ID.findall(text)] == member_ids
        # another column: sorted among the newest entries
        status, text = await get(http, "/ui/audit-log?sort=action&dir=desc")
        assert status == 200 and header(text, "Action") == "descending" and header(text, "No.") == "none"
        assert f"Audit entries: {total} in all, showing 1{DASH}{total}" in text
        actions = re.findall(r"<td>(addMember|login)</td>", text)
        assert actions == sorted(actions, reverse=True) and actions[0] == "login"
        # a column outside the whitelist, a bad direction, a bad page: told in words, with the type
        for path, words in (
            ("/ui/audit-log?sort=at", "sort column 'at' is not one of id, actor, action, result, status"),
            ("/ui/audit-log?sort=id&dir=sideways", "sort direction 'sideways' must be asc or desc"),
            ("/ui/audit-log?limit=0", "query parameter limit=0 is not in [1, 1000]"),
        ):
            status, text = await get(http, path)
            assert status == 400 and words in text and "Client.BadRequest" in text, (path, text)


async def test_detail_tables_are_sorted_and_paged_with_their_own_parameters(c: CentralAdmin) -> None:
    async with browser(c) as http:
        assert (await log_in(http, "admin")).status == 303
        token = await csrf(http)
        for form in ({"id": "DEV/GOV/1001", "name": "Agency A"}, {"id": "DEV/GOV/1002", "name": "Agency B"}):
            assert (await post(http, "/ui/members", {"_csrf": token, **form}))[0] == 303
        for code in ("gamma", "alpha", "beta"):
            assert (await post(http, "/ui/members/DEV:GOV:1001/subsystems", {"_csrf": token, "code": code}))[0] == 303
        # a member's subsystems: sorted by code, two a page
        status, text = await get(http, "/ui/members/DEV:GOV:1001?limit=2")
        assert status == 200 and f"Subsystems of DEV/GOV/1001: 3 in all, showing 1{DASH}2" in text
        assert re.findall(r"<tr><td>(\w+)</td><td>DEV/GOV/1001/", text) == ["alpha", "beta"]
        assert "offset=2" in text and header(text, "Code") == "ascending"
        status, text = await get(http, "/ui/members/DEV:GOV:1001?sort=code&dir=desc&limit=2&offset=2")
        assert re.findall(r"<tr><td>(\w+)</td><td>DEV/GOV/1001/", text) == ["alpha"]
        # a global group's members
        assert (await post(http, "/ui/global-groups", {"_csrf": token, "id": "DEV/g", "description": "G"}))[0] == 303
        for client in ("DEV/GOV/1002", "DEV/GOV/1001/beta", "DEV/GOV/1001/alpha"):
            assert (await post(http, "/ui/global-groups/DEV:g/members", {"_csrf": token, "client": client}))[0] == 303
        status, text = await get(http, "/ui/global-groups/DEV:g?sort=client&dir=desc&limit=1")
        assert f"Members of the group: 3 in all, showing 1{DASH}1" in text
        assert re.findall(r"<tr><td>(DEV/[^<]+)</td>", text) == ["DEV/GOV/1002"]
        # a server's two tables: the clients' parameters start with c, the certificates' with a
        assert (await post(http, "/ui/servers", {"_csrf": token, "id": "DEV/GOV/1001/ss1",
                                                 "address": "ss1.example.org:5500"}))[0] == 303
        for client in ("DEV/GOV/1001/beta", "DEV/GOV/1001/alpha"):
            assert (await post(http, "/ui/servers/DEV:GOV:1001:ss1/clients",
                               {"_csrf": token, "client": client}))[0] == 303
        status, text = await get(http, "/ui/servers/DEV:GOV:1001:ss1?climit=1&coffset=1")
        assert status == 200 and f"Clients: 2 in all, showing 2{DASH}2" in text
        assert "Authentication certificates: 0 in all" in text
        assert "DEV/GOV/1001/beta</td>" in text and "DEV/GOV/1001/alpha</td>" not in text
        status, text = await get(http, "/ui/servers/DEV:GOV:1001:ss1?asort=bogus")
        assert status == 400 and "sort column 'bogus' is not one of sha256" in text
        # a list page: members by name, descending, one a page; unknown column refused
        status, text = await get(http, "/ui/members?sort=name&dir=desc&limit=1&offset=1")
        assert f"Members: 2 in all, showing 2{DASH}2" in text and "Agency A" in text and "Agency B" not in text
        assert header(text, "Name") == "descending" and header(text, "Member") == "none"


async def test_security_server_audit_log_oldest_first(database_url: str, tmp_path: Path) -> None:
    async with admin_harness(database_url, tmp_path) as h:
        await h.add_user("admin", *ROLES)
        async with aiohttp.ClientSession(h.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            assert (await log_in(http, "admin")).status == 303
            token = await csrf(http)
            for code in ("a", "b", "c"):
                assert (await post(http, "/ui/local-groups", {"_csrf": token, "code": code}))[0] == 303
            ids = sorted(e.id for e in await h.audit())
            status, text = await get(http, "/ui/audit-log?sort=id&dir=asc&limit=3")
            assert status == 200 and header(text, "No.") == "ascending"
            assert [int(i) for i in _ROW_ID.findall(text)] == ids[:3]
            assert f"Audit entries, oldest first: {len(ids)} in all, showing 1{DASH}3" in text
            status, text = await get(http, "/ui/audit-log?sort=actor")
            assert status == 200 and header(text, "Actor") == "ascending"


def test_the_table_helper_sorts_pages_and_says_what_it_covers() -> None:
    """The helper alone, on a request made here: sort links turn the direction round and go back to the first
    page, the pager keeps the sort, a second table's parameters are its own, and rows that are only the API's
    first page are said to be so (never cut silently)."""
    rows = [{"name": n, "size": s} for n, s in (("b", 2), ("a", 10), ("c", None))]
    columns = (Column(key="name", label="Name"), Column(key="size", label="Size"),
               Column(key="remove", label="Remove", sortable=False))
    request = make_mocked_request("GET", "/ui/x?sort=size&dir=desc&limit=2&ksort=name")
    t = table(request, rows, columns, caption="Things", default_sort="name", total=5000)
    assert [r["name"] for r in t.rows] == ["a", "b"] and (t.total, t.of_all) == (3, 5000)
    assert (t.first, t.last, t.previous, t.next) == (1, 2, None, 2)
    assert t.aria_sort("size") == "descending" and t.aria_sort("name") == "none"
    assert t.sort_url("size") == "/ui/x?sort=size&dir=asc&limit=2&ksort=name&offset=0"
    assert t.page_url(2) == "/ui/x?sort=size&dir=desc&limit=2&ksort=name&offset=2"
    k = table(request, rows, columns, caption="Others", default_sort="size", prefix="k")
    assert [r["name"] for r in k.rows] == ["a", "b", "c"] and k.of_all is None
    assert k.sort_url("name").endswith("ksort=name&kdir=desc&koffset=0")
    for query, words in (("sort=remove", "sort column 'remove' is not one of name, size"),
                         ("dir=up", "sort direction 'up' must be asc or desc"),
                         ("offset=-1", "query parameter offset='-1' is not a non-negative integer")):
        with pytest.raises(RequestError, match=re.escape(words)):
            table(make_mocked_request("GET", f"/ui/x?{query}"), rows, columns, caption="Things")
