"""The central web interface's witness-policy page over real HTTP (no browser), on SQLite and PostgreSQL: choose a
server, set a policy (errors beside their field or on the form, with the X-Road type), change and remove it;
the CSRF token required; a role that may only read sees no form and is refused; all audited as the API's calls."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
from admin_kit import PASSWORD
from central_admin_kit import CentralAdmin, central_admin
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.central import registry
from gateway.identifiers import SecurityServerId
from gateway.trust.cosignature import WitnessKey

pytestmark = pytest.mark.integration

_CSRF_RE = re.compile(r'name="_csrf" value="([^"]*)"')
SS1, SS2, SS3 = (SecurityServerId.parse(f"DEV/GOV/100{n}/ss{n}") for n in (1, 2, 3))
K2 = WitnessKey.of_private_key(f"{SS2}/witness", ed25519.Ed25519PrivateKey.generate())
K3 = WitnessKey.of_private_key(f"{SS3}/witness", ed25519.Ed25519PrivateKey.generate())
W2 = f"{K2.vkey},https://ss2.example.org:5500/witness,{SS2}"
W3 = f"{K3.vkey},https://ss3.example.org:5500/witness,{SS3}"
SET = f"/ui/witness-policies/{SS1.encoded_id()}"


@pytest_asyncio.fixture
async def c(database_url: str, tmp_path: Path) -> AsyncIterator[CentralAdmin]:
    async with central_admin(database_url, tmp_path) as harness:
        for n, server in enumerate((SS1, SS2, SS3), 1):
            await registry.add_member(harness.central.engine, server.owner, name=f"Agency {n}", instance="DEV")
            await registry.add_server(harness.central.engine, server, address=f"ss{n}.example.org:5500",
                                      instance="DEV")
        now = datetime.now(UTC)
        await harness.store.add_user("root", PASSWORD, frozenset({"system-administrator"}), now=now)
        await harness.store.add_user("otto", PASSWORD, frozenset({"observer"}), now=now)
        yield harness


async def logged_in(c: CentralAdmin, name: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(c.url, cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.get("/ui/login") as resp:
        token = _CSRF_RE.search(await resp.text())
    assert token is not None
    async with http.post("/ui/login", data={"_csrf": token.group(1), "username": name, "password": PASSWORD,
                                            "next": "/ui/witness-policies"}, allow_redirects=False) as resp:
        assert resp.status == 303
    return http


async def get(http: aiohttp.ClientSession, path: str) -> tuple[int, str]:
    async with http.get(path, allow_redirects=False) as resp:
        return resp.status, html.unescape(await resp.text())


async def post(http: aiohttp.ClientSession, path: str, data: dict[str, str]) -> tuple[int, str, str]:
    async with http.post(path, data=data, allow_redirects=False) as resp:
        return resp.status, resp.headers.get("Location", ""), html.unescape(await resp.text())


def csrf_of(page: str) -> str:
    m = _CSRF_RE.search(page)
    assert m is not None
    return m.group(1)


async def test_choose_set_change_remove_and_refusals(c: CentralAdmin) -> None:
    root = await logged_in(c, "root")
    try:
        # (1) the page lists none and offers to choose a server; a malformed one is told beside the field
        status, page = await get(root, "/ui/witness-policies")
        assert status == 200 and "Witness policies: 0 in all" in page and 'name="server"' in page
        assert 'href="/ui/witness-policies" aria-current="page"' in page or "Witness policies</a>" in page
        status, page = await get(root, "/ui/witness-policies?server=DEV:GOV:1001")
        assert status == 400 and "security server identifier 'DEV/GOV/1001' has 3 parts" in page
        assert 'id="choose-server-error"' in page
        # (2) chosen: the set form for ss1
        status, page = await get(root, f"/ui/witness-policies?server={SS1.encoded_id()}")
        assert status == 200 and f"Set the witness policy of {SS1}" in page
        assert f'action="/ui/witness-policies/{quote(SS1.encoded_id())}"' in page
        token = csrf_of(page)
        # (3) refusals: a line that is not VKEY,URL,SERVER (beside the field), a quorum too large (on the form),
        # a witness of the logger's own member, a missing CSRF token
        status, _, page = await post(root, SET, {"_csrf": token, "quorum": "1", "witnesses": K2.vkey})
        assert status == 400 and 'id="set-witnesses-error"' in page
        assert f"Witnesses line 1 {K2.vkey[:80]!r} is not VKEY,URL,SERVER" in page and "Client.BadRequest" in page
        status, _, page = await post(root, SET, {"_csrf": token, "quorum": "3", "witnesses": f"{W2}\n{W3}"})
        assert status == 400 and f"the quorum 3 of the witness policy of {SS1} is more than the 2" in page
        assert W3 in page  # the form keeps what was typed
        status, _, page = await post(root, SET, {"_csrf": token, "quorum": "1",
                                                 "witnesses": f"{K2.vkey},https://x.example.org/witness,{SS1}"})
        assert status == 400 and "the logging server's own member" in page
        status, _, page = await post(root, SET, {"quorum": "1", "witnesses": W2})
        assert status == 403 and "anti-forgery (CSRF) token of your session" in page
        assert await registry.list_witness_policies(c.central.engine) == ()
        # (4) set: two witnesses, quorum 2; listed
        status, location, _ = await post(root, SET, {"_csrf": token, "quorum": "2", "witnesses": f"{W3}\n\n{W2}\n"})
        assert status == 303 and location.startswith("/ui/witness-policies?done=")
        status, page = await get(root, "/ui/witness-policies")
        assert "Witness policies: 1 in all" in page
        assert f"{K2.name} at https://ss2.example.org:5500/witness on {SS2}" in page
        # (5) change: the form comes filled with the policy; quorum 1 of one witness
        status, page = await get(root, f"/ui/witness-policies?server={SS1.encoded_id()}")
        assert f"{W2}\n{W3}</textarea>" in page and 'value="2"' in page
        status, _, _ = await post(root, SET, {"_csrf": token, "quorum": "1", "witnesses": W3})
        assert status == 303
        [policy] = await registry.list_witness_policies(c.central.engine)
        assert (policy.quorum, [w.key for w in policy.witnesses]) == (1, [K3])
    finally:
        await root.close()
    # (6) the observer sees the policy, no form, and is refused a change
    otto = await logged_in(c, "otto")
    try:
        status, page = await get(otto, "/ui/witness-policies")
        assert status == 200 and "Witness policies: 1 in all" in page
        assert "Set a witness policy" not in page and "/remove" not in page
        status, _, page = await post(otto, f"{SET}/remove", {"_csrf": csrf_of(page) if "_csrf" in page else ""})
        assert status == 403
    finally:
        await otto.close()
    # (7) the administrator removes it
    root = await logged_in(c, "root")
    try:
        _, page = await get(root, "/ui/witness-policies")
        status, location, _ = await post(root, f"{SET}/remove", {"_csrf": csrf_of(page)})
        assert status == 303 and "removed" in location
    finally:
        await root.close()
    assert await registry.list_witness_policies(c.central.engine) == ()
    # (8) audited as the API's operations, with the web user as actor
    sets = await c.audit(action="setWitnessPolicy")
    assert [(e.actor, e.result, e.status) for e in sets] == [
        ("root", "success", 303), ("root", "success", 303), ("root", "refused", 400), ("root", "refused", 400),
        ("root", "refused", 400)]
    removes = await c.audit(action="removeWitnessPolicy")
    assert [(e.actor, e.result) for e in removes] == [("root", "success"), ("otto", "refused")]
