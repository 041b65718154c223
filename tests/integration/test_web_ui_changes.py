"""The web interface's removals (asked to confirm first), service enabling, the token's log-out and PIN change,
users' roles and passwords, services from an OpenAPI document, the archive job and the dashboard's exchange
counts, over real HTTP without a browser, on SQLite and PostgreSQL. Browser journeys: tests/e2e/test_web_ui.py."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from admin_kit import PASSWORD, AdminHarness, admin_harness
from test_web_ui_forms import browser, csrf, log_in

from gateway.identifiers import ServiceId

pytestmark = pytest.mark.integration

SERVICE = ServiceId.parse("DEV/GOV/1001/consumer/pets", encoded=False)
BASE = f"/ui/services/{SERVICE.encoded_id()}"


@pytest.fixture
async def h(database_url: str, tmp_path: Path) -> AsyncIterator[AdminHarness]:
    async with admin_harness(database_url, tmp_path, token_pin="1234-5678-pin") as harness:
        yield harness


def _action(text: str, needle: str) -> str:
    """The action of the form whose action contains ``needle``."""
    m = re.search(rf'action="([^"]*{re.escape(needle)}[^"]*)"', text)
    assert m is not None, needle
    return html.unescape(m.group(1))


async def test_removals_ask_first_then_go_through_the_api(h: AdminHarness) -> None:
    await h.add_user("ops", "service-administrator", "registration-officer")
    await h.add_user("obs", "observer")
    async with browser(h) as http:
        await log_in(http, "ops")
        token = await csrf(http, "/ui/services")
        for path, data in (
            ("/ui/clients", {"id": "DEV/GOV/1001/consumer"}),
            ("/ui/clients", {"id": "DEV/GOV/1001/b"}),
            ("/ui/services", {"id": str(SERVICE), "url": "http://127.0.0.1:9/", "enabled": "true"}),
            (f"{BASE}/endpoints", {"method": "GET", "path": "/pets/*"}),
            ("/ui/local-groups", {"code": "g1"}),
            ("/ui/local-groups/g1/members", {"client": "DEV/GOV/1001/b"}),
        ):
            async with http.post(path, data={"_csrf": token, **data}) as resp:
                assert resp.status == 200, (path, await resp.text())
        # the endpoint: the first post asks, with a form that posts again confirmed; nothing is removed yet
        async with http.get(BASE) as resp:
            action = _action(await resp.text(), "/endpoints/remove")
        async with http.post(action, data={"_csrf": token}) as resp:
            text = html.unescape(await resp.text())
            assert resp.status == 200 and "Remove the endpoint GET /pets/*?" in text
            assert 'name="confirm" value="yes"' in text and f'href="{BASE}"' in text
        assert len((await h.serverconf.get_service(SERVICE)).endpoints) == 1
        async with http.post(action, data={"_csrf": token, "confirm": "yes"}) as resp:
            assert "Endpoint GET /pets/* removed." in html.unescape(await resp.text())
        assert (await h.serverconf.get_service(SERVICE)).endpoints == ()
        # the group member, the group, the service, the client: each confirmed
        async with http.get("/ui/local-groups") as resp:
            text = await resp.text()
        for action, said in (
            (_action(text, "/members/DEV:GOV:1001:b/remove"), "DEV/GOV/1001/b removed from g1."),
            (_action(text, "/local-groups/g1/remove"), "Local group g1 removed."),
            (f"{BASE}/remove", f"Service {SERVICE} removed."),
            ("/ui/clients/DEV:GOV:1001:b/remove", "Client DEV/GOV/1001/b removed."),
        ):
            async with http.post(action, data={"_csrf": token, "confirm": "yes"}) as resp:
                assert said in html.unescape(await resp.text()), action
        assert not await h.serverconf.list_groups()
        assert [str(c.id) for c in await h.serverconf.list_clients()] == ["DEV/GOV/1001/consumer"]
        assert await h.serverconf.list_services() == []
        # a second removal of the same: the API's 404, as a page
        async with http.post("/ui/clients/DEV:GOV:1001:b/remove", data={"_csrf": token, "confirm": "yes"}) as resp:
            assert resp.status == 404 and "Client.NotFound" in await resp.text()
        async with http.post("/ui/clients/DEV:GOV/remove", data={"_csrf": token, "confirm": "yes"}) as resp:
            assert resp.status == 400
    # an observer is refused at once, asked nothing, even when posting the confirmation by hand
    async with browser(h) as http:
        await log_in(http, "obs")
        token = await csrf(http)
        for path in ("/ui/clients/DEV:GOV:1001:consumer/remove", "/ui/local-groups/g1/remove", f"{BASE}/remove"):
            for extra in ({}, {"confirm": "yes"}):
                async with http.post(path, data={"_csrf": token, **extra}) as resp:
                    text = await resp.text()
                    assert resp.status == 403 and "obs (roles: observer) may not call" in text, path
                    assert "Confirm the removal" not in text
    assert [str(c.id) for c in await h.serverconf.list_clients()] == ["DEV/GOV/1001/consumer"]
    refused = await h.audit(actor="obs", result="refused")
    assert {"removeClient", "removeLocalGroup", "removeService"} <= {e.action for e in refused}
    removed = {e.action for e in await h.audit(actor="ops", result="success")}
    assert {"removeEndpoint", "removeLocalGroupMember", "removeLocalGroup", "removeService", "removeClient"} <= removed


async def test_a_service_is_disabled_and_enabled_with_one_button(h: AdminHarness) -> None:
    await h.add_user("ops", "service-administrator", "registration-officer")
    async with browser(h) as http:
        await log_in(http, "ops")
        token = await csrf(http, "/ui/services")
        for path, data in (
            ("/ui/clients", {"id": "DEV/GOV/1001/consumer"}),
            ("/ui/services", {"id": str(SERVICE), "url": "http://127.0.0.1:9/", "enabled": "true"}),
        ):
            async with http.post(path, data={"_csrf": token, **data}) as resp:
                assert resp.status == 200
        async with http.get(BASE) as resp:
            assert "Disable the service" in await resp.text()
        async with http.post(f"{BASE}/enabled", data={"_csrf": token, "enabled": "false"}) as resp:
            text = await resp.text()
            assert "Service disabled" in text and "Enable the service" in text
        assert not (await h.serverconf.get_service(SERVICE)).enabled
        async with http.post(f"{BASE}/enabled", data={"_csrf": token, "enabled": "true"}) as resp:
            assert "Service enabled." in await resp.text()
        assert (await h.serverconf.get_service(SERVICE)).enabled


async def test_token_log_out_pin_change_and_key_deletion(h: AdminHarness) -> None:
    await h.add_user("sec", "security-officer")
    assert h.ctx.token is not None
    async with browser(h) as http:
        await log_in(http, "sec")
        token = await csrf(http, "/ui/keys")
        async with http.post("/ui/keys/token-login", data={"_csrf": token, "pin": "1234-5678-pin"}) as resp:
            text = await resp.text()
            assert "Tokens: 1 in all" in text and "Log out of the token" in text
        # the new PIN typed twice differently: said beside the second field, nothing sent
        form = {"_csrf": token, "old_pin": "1234-5678-pin", "new_pin": "8765-4321-pin", "repeat_pin": "8765-4321-pxn"}
        async with http.post("/ui/keys/token-pin", data=form) as resp:
            text = html.unescape(await resp.text())
            assert resp.status == 400 and 'id="newpin-repeat_pin-error">New PIN again is not the same' in text
            assert "8765-4321" not in text
        async with http.post(
            "/ui/keys/token-pin", data={**form, "old_pin": "0000-0000-bad", "repeat_pin": "8765-4321-pin"}
        ) as resp:
            assert resp.status == 400 and 'id="newpin-old_pin-error"' in await resp.text()
        async with http.post("/ui/keys/token-pin", data={**form, "repeat_pin": "8765-4321-pin"}) as resp:
            assert "The token&#39;s PIN was changed" in await resp.text()
        async with http.post("/ui/keys/token-logout", data={"_csrf": token}) as resp:
            assert "Token logged out" in await resp.text()
        assert not h.ctx.token.logged_in
        async with http.post("/ui/keys/token-login", data={"_csrf": token, "pin": "8765-4321-pin"}) as resp:
            assert "Token logged in." in await resp.text()
        # a key deleted, after the question
        async with http.post("/ui/keys", data={"_csrf": token, "usage": "sign", "label": "spare"}) as resp:
            assert resp.status == 200
        [key] = (await h.ctx.token.state()).keys
        async with http.post(f"/ui/keys/{key.id}/delete", data={"_csrf": token}) as resp:
            assert "Delete the key" in await resp.text()
        assert len((await h.ctx.token.state()).keys) == 1
        async with http.post(f"/ui/keys/{key.id}/delete", data={"_csrf": token, "confirm": "yes"}) as resp:
            assert "deleted." in await resp.text()
        assert (await h.ctx.token.state()).keys == ()
    done = {e.action for e in await h.audit(actor="sec", result="success")}
    assert {"changeTokenPin", "logoutToken", "deleteKey"} <= done


async def test_users_roles_passwords_lock_out_removal_and_own_password(h: AdminHarness) -> None:
    await h.add_user("admin", "system-administrator")
    await h.add_user("bob", "observer")
    async with browser(h) as http:
        await log_in(http, "admin")
        token = await csrf(http, "/ui/users")
        async with http.get("/ui/users?ksort=name&kdir=desc") as resp:
            text = await resp.text()
            assert resp.status == 200 and 'href="/ui/users/bob"' in text
        async with http.get("/ui/users?ksort=nope") as resp:
            assert resp.status == 400 and "sort column" in await resp.text()
        async with http.get("/ui/users/bob") as resp:
            text = await resp.text()
            assert 'id="roles-role-observer" name="role-observer" value="true" checked' in text
        # roles: none is refused beside the role boxes; then auditor instead of observer
        async with http.post("/ui/users/bob/roles", data={"_csrf": token}) as resp:
            assert resp.status == 400 and 'id="roles-roles-error"' in await resp.text()
        async with http.post("/ui/users/bob/roles", data={"_csrf": token, "role-auditor": "true"}) as resp:
            assert "Roles changed" in await resp.text()
        assert (await h.store.get_user("bob")).roles == frozenset({"auditor"})
        # a password typed differently twice, one too short, then one that is set
        form = {"_csrf": token, "password": "bob's new password", "repeat": "bob's new passwort"}
        async with http.post("/ui/users/bob/password", data=form) as resp:
            assert resp.status == 400 and 'id="password-repeat-error"' in await resp.text()
        async with http.post("/ui/users/bob/password", data={**form, "password": "short", "repeat": "short"}) as resp:
            assert resp.status == 400 and 'id="password-password-error"' in await resp.text()
        async with http.post("/ui/users/bob/password", data={**form, "repeat": form["password"]}) as resp:
            assert "Password set" in await resp.text()
        # a lock-out after wrong passwords, cleared from the page
        for _ in range(h.ctx.settings.max_failed_logins):
            await h.request("POST", "/api/v1/login", json={"username": "bob", "password": "wrong password 1"})
        async with http.get("/ui/users/bob") as resp:
            assert "Clear the lock-out" in await resp.text()
        async with http.post("/ui/users/bob/unlock", data={"_csrf": token}) as resp:
            assert "Lock-out cleared." in await resp.text()
        assert (await h.store.get_user("bob")).locked_until is None
        # removal, asked first
        async with http.post("/ui/users/bob/remove", data={"_csrf": token}) as resp:
            assert "Remove user bob?" in await resp.text()
        async with http.post("/ui/users/bob/remove", data={"_csrf": token, "confirm": "yes"}) as resp:
            assert "User bob removed." in await resp.text()
        assert await h.store.find_user("bob") is None
        # one's own password: the current one is checked, and the session ends with the change
        async with http.get("/ui/account") as resp:
            assert "Change your password" in await resp.text()
        own = {
            "_csrf": token,
            "current_password": "not it at all",
            "new_password": "admin's new password",
            "repeat": "admin's new password",
        }
        async with http.post("/ui/account/password", data=own) as resp:
            assert resp.status == 401 and 'id="own-current_password-error"' in await resp.text()
        async with http.post(
            "/ui/account/password", data={**own, "current_password": PASSWORD}, allow_redirects=False
        ) as resp:
            assert resp.status == 303 and "password+was+changed" in resp.headers["Location"]
        async with http.get("/ui/users", allow_redirects=False) as resp:
            assert resp.status == 303 and "/ui/login" in resp.headers["Location"]
        assert (await log_in(http, "admin", "admin's new password")).status == 303
    done = {e.action for e in await h.audit(actor="admin", result="success")}
    assert {"setUserRoles", "setUserPassword", "unlockUser", "removeUser", "changeOwnPassword"} <= done


PETS_OPENAPI = """openapi: 3.0.3
info: {title: pets, version: "1"}
servers: [{url: "http://127.0.0.1:9/pets-api"}]
paths:
  /pets:
    parameters: []
    get: {responses: {"200": {description: ok}}}
    post: {responses: {"201": {description: made}}}
  /pets/{petId}:
    get: {responses: {"200": {description: ok}}}
    delete: {responses: {"204": {description: gone}}}
  /files/{name}.json:
    summary: a templated part of a segment
    put: {responses: {"204": {description: stored}}}
"""


@pytest.fixture
async def descriptions() -> AsyncIterator[str]:
    """A loopback server of OpenAPI descriptions, good and bad, at a free port."""
    from aiohttp import web

    answers = {
        "/pets.yaml": (200, PETS_OPENAPI),
        "/pets.json": (200, '{"openapi": "3.1.0", "paths": {"/a": {"get": {}}}}'),
        "/swagger.json": (200, '{"swagger": "2.0", "paths": {}}'),
        "/none.yaml": (200, "openapi: 3.0.0\npaths: {/a: {summary: nothing}}\n"),
        "/broken": (200, "{not json"),
    }

    async def serve(request: web.Request) -> web.Response:
        if request.path == "/moved":
            return web.Response(status=302, headers={"Location": "/pets.yaml"})
        status, text = answers.get(request.path, (404, "no"))
        return web.Response(status=status, text=text)

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_a_service_from_its_openapi_description(h: AdminHarness, descriptions: str) -> None:
    await h.add_user("ops", "service-administrator", "registration-officer")
    await h.add_user("obs", "observer")
    async with browser(h) as http:
        await log_in(http, "ops")
        token = await csrf(http, "/ui/services")
        async with http.post("/ui/clients", data={"_csrf": token, "id": "DEV/GOV/1001/consumer"}) as resp:
            assert resp.status == 200
        form = {"_csrf": token, "id": str(SERVICE), "timeout_seconds": "30", "enabled": "true"}
        for source, status, said in (
            ("", 400, "OpenAPI URL is needed"),
            ("ftp://127.0.0.1/x", 400, "is not an http or https URL"),
            (f"{descriptions}/missing", 400, "the server answered HTTP 404"),
            (f"{descriptions}/moved", 400, "HTTP 302 (to /pets.yaml)"),
            (f"{descriptions}/swagger.json", 400, "Swagger 2.0; only OpenAPI 3"),
            (f"{descriptions}/broken", 400, "neither JSON nor YAML"),
            (f"{descriptions}/none.yaml", 400, "declares no operation"),
            ("http://127.0.0.1:9/closed", 400, "cannot be fetched"),
        ):
            async with http.post("/ui/services/from-openapi", data={**form, "openapi_url": source}) as resp:
                text = html.unescape(await resp.text())
                assert resp.status == status and 'id="openapi-openapi_url-error">OpenAPI URL' in text, source
                assert said in text, (source, text[-800:])
        # a description without a server URL needs the service's URL: said beside that field
        async with http.post(
            "/ui/services/from-openapi", data={**form, "openapi_url": f"{descriptions}/pets.json"}
        ) as resp:
            assert resp.status == 400 and 'id="openapi-url-error">Service URL is needed' in await resp.text()
        async with http.post(
            "/ui/services/from-openapi", data={**form, "openapi_url": f"{descriptions}/pets.yaml"}
        ) as resp:
            assert "added with 5 endpoints from its OpenAPI description" in await resp.text()
    service = await h.serverconf.get_service(SERVICE)
    assert service.url == "http://127.0.0.1:9/pets-api" and service.openapi_url == f"{descriptions}/pets.yaml"
    assert service.timeout_seconds == 30
    assert [(e.method, e.path) for e in service.endpoints] == [
        ("GET", "/pets"),
        ("POST", "/pets"),
        ("GET", "/pets/*"),
        ("DELETE", "/pets/*"),
        ("PUT", "/files/*"),
    ]
    # an observer is refused before anything is fetched
    async with browser(h) as http:
        await log_in(http, "obs")
        token = await csrf(http)
        async with http.post(
            "/ui/services/from-openapi",
            data={"_csrf": token, "id": "DEV/GOV/1001/consumer/x", "openapi_url": f"{descriptions}/pets.yaml"},
        ) as resp:
            assert resp.status == 403 and "may not call addService" in await resp.text()


async def test_dashboard_counts_exchanges_and_errors_of_the_last_hour(database_url: str, tmp_path: Path) -> None:
    from dataclasses import replace
    from datetime import timedelta

    from gateway.opmon.record import OpRecord

    async with admin_harness(database_url, tmp_path, with_opmon=True) as h:
        assert h.ctx.opmon is not None
        now = h.clock()
        base = OpRecord(
            side="client",
            origin="test",
            message_id="m",
            request_id="r",
            client="DEV/GOV/1001/consumer",
            service=str(SERVICE),
            method="GET",
            request_in=now,
            request_out=None,
            response_in=None,
            response_out=now,
            request_bytes=0,
            response_bytes=0,
            status=200,
            fault=None,
            peer_server=None,
        )
        failed = replace(base, status=500, fault="Server.ServerProxy.AccessDenied")
        await h.ctx.opmon.insert(
            [
                base,
                replace(base, request_in=now - timedelta(minutes=30)),
                replace(base, side="server"),
                failed,
                replace(base, request_in=now - timedelta(hours=2)),  # before the hour: not counted
                replace(failed, request_in=now - timedelta(hours=2)),
            ]
        )
        await h.add_user("obs", "observer")
        await h.add_user("aud", "auditor")
        async with browser(h) as http:
            await log_in(http, "obs")
            async with http.get("/ui/dashboard") as resp:
                text = html.unescape(await resp.text())
            assert "Exchanges in the last hour" in text
            assert re.search(r"client side[^<]*</td><td>2</td><td><strong class=\"bad\">1</strong>", text), text
            assert re.search(r"server side[^<]*</td><td>1</td><td>0</td>", text)
            assert "Latest failures: 1 of 1 in the last hour" in text and "Server.ServerProxy.AccessDenied" in text
        async with browser(h) as http:  # the auditor's roles do not read operational records: no section
            await log_in(http, "aud")
            async with http.get("/ui/dashboard") as resp:
                assert "Exchanges in the last hour" not in await resp.text()


async def test_registration_requests_need_the_security_server(h: AdminHarness) -> None:
    """The registration buttons run registerClient and registerServer; an admin process without the security
    server (this harness) has no central server to send to: 409, said on the form. The journey through a real
    central server is tests/e2e/test_web_ui.py."""
    await h.add_user("reg", "registration-officer", "security-officer")
    await h.add_user("obs", "observer")
    async with browser(h) as http:
        await log_in(http, "reg")
        token = await csrf(http, "/ui/clients")
        async with http.post("/ui/clients", data={"_csrf": token, "id": "DEV/GOV/1001/consumer"}) as resp:
            assert resp.status == 200
        for path, form_id in (
            ("/ui/clients/DEV:GOV:1001:consumer/register", "register-error"),
            ("/ui/keys/register", "register-error"),
        ):
            async with http.post(path, data={"_csrf": token}) as resp:
                text = await resp.text()
                assert resp.status == 409 and f'id="{form_id}"' in text and "sends no management requests" in text
        async with http.post("/ui/clients/DEV:GOV:1001:other/register", data={"_csrf": token}) as resp:
            assert resp.status == 404
    async with browser(h) as http:
        await log_in(http, "obs")
        token = await csrf(http)
        async with http.get("/ui/clients/DEV:GOV:1001:consumer") as resp:
            assert "Send registration request" not in await resp.text()
        async with http.post("/ui/clients/DEV:GOV:1001:consumer/register", data={"_csrf": token}) as resp:
            assert resp.status == 403 and "may not call registerClient" in await resp.text()
    assert {"registerClient", "registerServer"} <= {e.action for e in await h.audit(actor="reg", result="refused")}
