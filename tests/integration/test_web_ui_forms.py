"""The web interface's forms over real HTTP (no browser): the log-in's double-submit token and redirect target,
cookie attributes, CSRF refusals, errors beside their field, bad table and form input, the keys page with a
software token, an expired session. The browser journeys are tests/e2e/test_web_ui.py."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from admin_kit import PASSWORD, AdminHarness, admin_harness

pytestmark = pytest.mark.integration

_CSRF_RE = re.compile(r'name="_csrf" value="([^"]*)"')


@pytest.fixture
async def h(database_url: str, tmp_path: Path) -> AsyncIterator[AdminHarness]:
    async with admin_harness(database_url, tmp_path, token_pin="1234-5678-pin") as harness:
        yield harness


def browser(h: AdminHarness) -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1 (as a browser would) and does not follow redirects."""
    return aiohttp.ClientSession(h.url, cookie_jar=aiohttp.CookieJar(unsafe=True))


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


async def test_log_in_double_submit_redirect_target_and_cookies(h: AdminHarness) -> None:
    await h.add_user("admin", "system-administrator")
    async with browser(h) as http:
        # the log-in form without its cookie's value is refused
        async with http.post("/ui/login", data={"username": "admin", "password": PASSWORD},
                             allow_redirects=False) as resp:
            assert resp.status == 403 and "anti-forgery (CSRF) token" in await resp.text()
        # only a page of the interface is a target after the log-in, never another site
        for target, lands in (("/ui/users", "/ui/users"), ("//evil.example/", "/ui/dashboard"),
                              ("https://evil.example/ui/", "/ui/dashboard"), ("/api/v1/users", "/ui/dashboard")):
            resp = await log_in(http, "admin", next_=target)
            assert resp.status == 303 and resp.headers["Location"] == lands, target
        cookie = resp.headers.getall("Set-Cookie")
        session = next(c for c in cookie if c.startswith("gw_session="))
        assert "HttpOnly" in session and "SameSite=Strict" in session and "Path=/ui" in session
        assert "Secure" not in session and "Max-Age=900" in session
        # a wrong password: 401, said on the form with its type, and not typed back into the page
        async with http.get("/ui/login") as page_:
            token = _CSRF_RE.search(await page_.text())
        assert token is not None
        async with http.post("/ui/login", data={"_csrf": token.group(1), "username": "admin",
                                                "password": "wrong password 123"}) as resp:
            text = await resp.text()
            assert resp.status == 401 and "Client.Unauthorized" in text and 'value="admin"' in text
            assert "wrong password 123" not in text
    entries = await h.audit(action="login")
    assert {e.result for e in entries} == {"success", "refused"}


async def test_secure_cookies_setting(database_url: str, tmp_path: Path) -> None:
    async with admin_harness(database_url, tmp_path, secure_cookies=True) as h:
        await h.add_user("admin", "system-administrator")
        async with browser(h) as http, http.get("/ui/login") as resp:
            assert "Secure" in resp.headers["Set-Cookie"]


async def test_csrf_and_role_refusals_are_pages_and_audited(h: AdminHarness) -> None:
    await h.add_user("obs", "observer")
    async with browser(h) as http:
        await log_in(http, "obs")
        token = await csrf(http)
        async with http.post("/ui/clients", data={"id": "DEV/GOV/1001/x"}) as resp:
            assert resp.status == 403 and "anti-forgery (CSRF) token of your session" in await resp.text()
        async with http.post("/ui/clients", data={"id": "DEV/GOV/1001/x", "_csrf": token}) as resp:
            text = await resp.text()
            assert resp.status == 403 and "may not call addClient" in text and "Client.Forbidden" in text
        # a form that is not a form, and one that is too large
        async with http.post("/ui/clients", json={"id": "x", "_csrf": token}) as resp:
            assert resp.status == 400 and "application/x-www-form-urlencoded" in await resp.text()
        async with http.post("/ui/clients", data={"pem": "x" * 70_000, "_csrf": token}) as resp:
            assert resp.status == 413 and "larger than 51200 bytes" in await resp.text()

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: cut by aiohttp at the same bound
            yield f"_csrf={token}&pem=".encode()
            for _ in range(70):
                yield b"x" * 1000

        async with http.post("/ui/clients", data=chunked(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
            assert resp.status == 413 and resp.content_type == "text/html"
    assert await h.serverconf.list_clients() == []
    refused = await h.audit(actor="obs", result="refused")
    assert {e.action for e in refused} >= {"addClient"}
    assert any("CSRF" in e.details.get("error", "") for e in refused)


async def test_errors_beside_their_field_and_bad_table_input(h: AdminHarness) -> None:
    await h.add_user("svc", "service-administrator", "registration-officer")
    async with browser(h) as http:
        await log_in(http, "svc")
        token = await csrf(http, "/ui/services")
        form = {"_csrf": token, "id": "DEV/GOV/1001/consumer/pets", "url": "http://127.0.0.1:9/",
                "timeout_seconds": "soon"}
        async with http.post("/ui/services", data=form) as resp:
            text = html.unescape(await resp.text())
            assert resp.status == 400
            assert re.search(r'id="add-timeout_seconds-error">Timeout \(seconds\) \'soon\' is not a number', text)
            assert 'value="http://127.0.0.1:9/"' in text  # what was typed is kept
        async with http.post("/ui/services", data={**form, "timeout_seconds": "7200"}) as resp:
            text = html.unescape(await resp.text())
            assert resp.status == 400 and "Timeout (seconds) 7200.0 is more than 3600" in text
        async with http.post("/ui/clients", data={"_csrf": token, "id": "DEV/GOV/1001/consumer"}) as resp:
            assert resp.status == 200
        async with http.post("/ui/clients/DEV:GOV:1001:consumer/status",
                             data={"_csrf": token, "status": "disabled"}) as resp:
            assert resp.status == 200 and "Client marked disabled." in await resp.text()
        [client] = await h.serverconf.list_clients()
        assert client.status == "disabled"
        async with http.post("/ui/clients/DEV:GOV:1001:consumer/status",
                             data={"_csrf": token, "status": "gone"}) as resp:
            assert resp.status == 400 and 'id="status-status-error"' in await resp.text()
        async with http.post("/ui/clients", data={"_csrf": token, "id": "DEV/GOV/1001/bad;part"}) as resp:
            text = await resp.text()
            assert resp.status == 400 and 'id="add-id-error"' in text and "Client.InvalidClientIdentifier" in text
        for query, said in (("sort=nope", "sort column 'nope' is not one of"), ("sort=id&dir=up", "must be asc"),
                            ("limit=0", "limit=0 is not in [1, 1000]"), ("offset=-1", "not a non-negative")):
            async with http.get(f"/ui/clients?{query}") as resp:
                assert resp.status == 400 and said in html.unescape(await resp.text()), query


async def test_keys_page_with_a_software_token(h: AdminHarness) -> None:
    await h.add_user("sec", "security-officer")
    async with browser(h) as http:
        await log_in(http, "sec")
        token = await csrf(http, "/ui/keys")
        async with http.post("/ui/keys/token-login", data={"_csrf": token, "pin": "wrong-pin-0000"}) as resp:
            text = await resp.text()
            assert resp.status == 400 and "Signer.PinIncorrect" in text and "wrong-pin-0000" not in text
        async with http.post("/ui/keys/token-login", data={"_csrf": token, "pin": "1234-5678-pin"}) as resp:
            assert resp.status == 200 and "Token logged in." in await resp.text()
        async with http.post("/ui/keys", data={"_csrf": token, "usage": "sign", "label": "signing 1"}) as resp:
            assert "A new sign key was generated." in await resp.text()
        [key] = (await h.ctx.token.state()).keys if h.ctx.token else []
        async with http.post(f"/ui/keys/{key.id}/csr", data={"_csrf": token, "name": "Agency A"}) as resp:
            assert resp.status == 200 and resp.content_type == "application/pkcs10"
            assert (await resp.text()).startswith("-----BEGIN CERTIFICATE REQUEST-----")
        async with http.post(f"/ui/keys/{key.id}/csr", data={"_csrf": token, "member": "DEV/GOV"}) as resp:
            assert resp.status == 400 and f'id="csr-{key.id}-member-error"' in await resp.text()
        async with http.post("/ui/keys/certificates", data={"_csrf": token, "pem": "not a certificate"}) as resp:
            assert resp.status == 400 and 'class="error"' in await resp.text()


async def test_an_expired_session_sends_back_to_the_log_in(h: AdminHarness) -> None:
    await h.add_user("obs", "observer")
    async with browser(h) as http:
        await log_in(http, "obs")
        token = await csrf(http)
        h.clock.advance(901)
        async with http.get("/ui/clients", allow_redirects=False) as resp:
            assert resp.status == 303 and "session+token+has+expired" in resp.headers["Location"]
        async with http.post("/ui/logout", data={"_csrf": token}) as resp:
            assert resp.status == 401 and "session token has expired" in await resp.text()


async def test_local_groups_access_rights_and_the_audit_log_pages(h: AdminHarness) -> None:
    from gateway.identifiers import ServiceId

    await h.add_user("ops", "service-administrator", "registration-officer", "system-administrator")
    service = ServiceId.parse("DEV/GOV/1001/consumer/pets", encoded=False)
    async with browser(h) as http:
        await log_in(http, "ops")
        token = await csrf(http, "/ui/local-groups")
        async with http.post("/ui/clients", data={"_csrf": token, "id": "DEV/GOV/1001/consumer"}) as resp:
            assert resp.status == 200
        async with http.post("/ui/services", data={"_csrf": token, "id": str(service), "url": "http://127.0.0.1:9/",
                                                   "enabled": "true"}) as resp:
            assert resp.status == 200
        # a local group with a member, granted access to the service, then revoked
        async with http.post("/ui/local-groups", data={"_csrf": token, "code": "auditors"}) as resp:
            assert "Local group auditors added" in await resp.text()
        async with http.post("/ui/local-groups/auditors/members",
                             data={"_csrf": token, "client": "DEV/GOV/1001"}) as resp:
            assert "DEV/GOV/1001 added to auditors." in await resp.text()
        async with http.post("/ui/local-groups/auditors/members", data={"_csrf": token, "client": "DEV"}) as resp:
            assert resp.status == 400 and 'id="member-auditors-client-error"' in await resp.text()
        base = f"/ui/services/{service.encoded_id()}"
        async with http.post(f"{base}/access-rights", data={"_csrf": token, "subject": "LOCALGROUP:auditors",
                                                            "method": "GET", "path": "/pets/*"}) as resp:
            text = html.unescape(await resp.text())
            assert "Access granted to LOCALGROUP:auditors." in text
        [rule] = await h.serverconf.list_rules(service=service)
        assert (rule.endpoint.method, rule.endpoint.path) == ("GET", "/pets/*")
        revoke = re.search(r'action="([^"]*/access-rights/revoke\?[^"]*)"', text)
        assert revoke is not None
        async with http.post(html.unescape(revoke.group(1)), data={"_csrf": token}) as resp:
            assert "Revoke the access of LOCALGROUP:auditors" in await resp.text()  # asked first
        assert len(await h.serverconf.list_rules(service=service)) == 1
        async with http.post(html.unescape(revoke.group(1)), data={"_csrf": token, "confirm": "yes"}) as resp:
            assert "Access of LOCALGROUP:auditors revoked." in await resp.text()
        assert await h.serverconf.list_rules(service=service) == []
        # the audit log: filtered, paged by the API, saying how many match
        async with http.get("/ui/audit-log?actor=ops&result=success&limit=2") as resp:
            text = await resp.text()
        total = len(await h.audit(actor="ops", result="success"))
        assert total >= 6 and f"Audit entries, newest first: {total} in all, showing 1\u20132" in text
        assert "Next page" in text and "Previous page" not in text
        async with http.get("/ui/audit-log?result=maybe") as resp:
            assert resp.status == 400
        # a table sorted by a column, both ways
        async with http.post("/ui/clients", data={"_csrf": token, "id": "DEV/GOV/1001/aaa"}) as resp:
            assert resp.status == 200
        for direction, first in (("asc", "DEV/GOV/1001/aaa"), ("desc", "DEV/GOV/1001/consumer")):
            async with http.get(f"/ui/clients?sort=id&dir={direction}") as resp:
                rows = re.findall(r'<td><a href="/ui/clients/[^"]+">([^<]+)</a>', await resp.text())
            assert rows[0] == first and len(rows) == 2, (direction, rows)


async def test_message_log_pages_refuse_bad_input_and_other_roles(h: AdminHarness) -> None:
    await h.add_user("aud", "auditor")
    await h.add_user("obs", "observer")
    async with browser(h) as http:
        await log_in(http, "aud")
        for path, status, said in (
            ("/ui/messagelog/records/5", 404, "has no record 5"),
            ("/ui/messagelog/records/five", 400, "record number 'five' is not a whole number"),
            ("/ui/messagelog?to=tomorrow", 400, 'id="search-to-error"'),
            ("/ui/messagelog?origin=has%20space", 400, "printable ASCII"),
            ("/ui/messagelog/archive?from=2026-13-01T00:00", 400, 'id="archive-from-error"'),
        ):
            async with http.get(path) as resp:
                text = html.unescape(await resp.text())
                assert resp.status == status and said in text, (path, resp.status, text[-600:])
        # an empty log has nothing to archive: said beside the archive form, not as a broken download
        async with http.get("/ui/messagelog/archive") as resp:
            assert resp.status >= 400 and resp.content_type == "text/html"
            assert 'id="archive-error"' in await resp.text()
    async with browser(h) as http:
        await log_in(http, "obs")
        async with http.get("/ui/messagelog") as resp:
            assert resp.status == 403 and "may not call listMessageLogRecords" in await resp.text()
    audited = {e.action for e in await h.audit(actor="aud")}
    assert {"exportMessageLogRecord", "listMessageLogRecords", "exportMessageLogArchive"} <= audited


async def test_dashboard_counts_the_last_hour_of_the_log(h: AdminHarness) -> None:
    from datetime import timedelta

    from test_messagelog_store import rec

    for i, age in enumerate((7200, 600, 0)):
        await h.messagelog.append(rec(i, origin=h.ctx.origin, created=h.clock() - timedelta(seconds=age)))
    await h.add_user("obs", "observer")
    async with browser(h) as http:
        await log_in(http, "obs")
        async with http.get("/ui/dashboard") as resp:
            text = html.unescape(await resp.text())
    assert "<dt>Records</dt><dd>3, of which 2 in the last hour" in text
    assert "<dt>Version</dt><dd>1</dd>" in text  # the global configuration the harness serves


async def test_no_such_page_is_an_html_page(h: AdminHarness) -> None:
    async with browser(h) as http:
        for method, path, status, said in (("GET", "/ui/nowhere", 404, "there is no page /ui/nowhere"),
                                           ("DELETE", "/ui/clients", 405, "/ui/clients does not take DELETE")):
            async with http.request(method, path) as resp:
                assert resp.status == status and resp.content_type == "text/html"
                assert said in await resp.text()
