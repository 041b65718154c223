"""The central server's users, API keys and account pages over real HTTP (no browser), on SQLite and
PostgreSQL: a system administrator adds a user with central roles, changes its roles and password, creates an
API key (shown once, and usable against the REST API), revokes it and removes the user after a confirmation;
errors beside their field; another role does not see the pages and is refused when posting by hand; a form
without the CSRF token is refused; one's own password change ends the session. Every change is audited as the
REST API's calls are. The browser's look at the pages is in tests/e2e/test_web_central.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from admin_kit import PASSWORD
from central_admin_kit import CentralAdmin, central_admin
from test_web_central_forms import browser, csrf, log_in, post

from gateway.admin.roles import CENTRAL_ROLES

pytestmark = pytest.mark.integration

NEW_PASSWORD = "a new password for rita"


@pytest_asyncio.fixture
async def c(database_url: str, tmp_path: Path) -> AsyncIterator[CentralAdmin]:
    async with central_admin(database_url, tmp_path) as harness:
        await harness.store.add_user("admin", PASSWORD, frozenset({"system-administrator"}), now=datetime.now(UTC))
        await harness.store.add_user("olga", PASSWORD, frozenset({"registration-officer"}), now=datetime.now(UTC))
        yield harness


async def test_users_and_api_keys_through_the_pages(c: CentralAdmin) -> None:
    async with browser(c) as http:
        assert (await log_in(http, "admin")).status == 303
        async with http.get("/ui/users") as resp:
            text = await resp.text()
        assert resp.status == 200 and "Users: 2 in all" in text and "API keys: 0 in all" in text
        assert 'href="/ui/users" aria-current="page">Users and API keys' in text
        # the role boxes are the central server's roles, not the security server's
        assert re.findall(r'name="role-([a-z-]+)"', text) == list(CENTRAL_ROLES) * 2
        token = await csrf(http, "/ui/users")
        # a short password: beside its field, with the type, and not typed back
        status, _, text = await post(http, "/ui/users", {"_csrf": token, "username": "rita", "password": "short",
                                                         "role-registration-officer": "true"})
        assert status == 400 and 'id="user-password-error"' in text and "Client.BadRequest" in text
        assert 'value="short"' not in text
        # no role: beside the roles
        status, _, text = await post(http, "/ui/users", {"_csrf": token, "username": "rita",
                                                         "password": "a long enough password"})
        assert status == 400 and 'id="user-roles-error"' in text
        status, where, _ = await post(http, "/ui/users", {"_csrf": token, "username": "rita",
                                                          "password": "a long enough password",
                                                          "role-registration-officer": "true"})
        assert status == 303 and where.startswith("/ui/users?done=User+rita+added")
        # one user: roles, password (typed twice)
        status, where, _ = await post(http, "/ui/users/rita/roles", {"_csrf": token, "role-observer": "true",
                                                                     "role-auditor": "true"})
        assert status == 303 and where.startswith("/ui/users/rita?done=Roles+changed")
        async with http.get("/ui/users/rita") as resp:
            assert resp.status == 200 and "observer, auditor" in await resp.text()
        status, _, text = await post(http, "/ui/users/rita/password", {"_csrf": token, "password": NEW_PASSWORD,
                                                                       "repeat": "something else"})
        assert status == 400 and "is not the same as the new password" in text
        status, _, _ = await post(http, "/ui/users/rita/password", {"_csrf": token, "password": NEW_PASSWORD,
                                                                    "repeat": NEW_PASSWORD})
        assert status == 303
        # an API key, shown once, which the REST API takes; then revoked
        status, _, text = await post(http, "/ui/api-keys", {"_csrf": token, "name": "registry sync",
                                                            "role-observer": "true"})
        assert status == 201 and "Copy it now: it is shown only once." in text
        m = re.search(r"<p><code>([^<]+)</code></p>", text)
        assert m
        key = m.group(1)
        assert (await c.request("GET", "/api/v1/members", key=key))[0] == 200
        async with http.get("/ui/users") as resp:
            listing = await resp.text()
        assert key not in listing and "registry sync" in listing
        key_id = re.search(r'action="/ui/api-keys/([^/"]+)/revoke"', listing)
        assert key_id
        status, where, _ = await post(http, f"/ui/api-keys/{key_id.group(1)}/revoke", {"_csrf": token})
        assert status == 303 and "revoked" in where
        assert (await c.request("GET", "/api/v1/members", key=key))[0] == 401
        # the removal asks first, and only the confirming post removes
        status, _, text = await post(http, "/ui/users/rita/remove", {"_csrf": token})
        assert status == 200 and "Remove user rita?" in text and 'name="confirm" value="yes"' in text
        assert "rita" in {u.username for u in await c.store.list_users()}
        status, where, _ = await post(http, "/ui/users/rita/remove", {"_csrf": token, "confirm": "yes"})
        assert status == 303 and where.startswith("/ui/users?done=User+rita+removed")
        # a form without the session's CSRF token changes nothing
        status, _, text = await post(http, "/ui/users", {"username": "mallory", "password": "a long enough password",
                                                         "role-system-administrator": "true"})
        assert status == 403 and "anti-forgery (CSRF) token of your session" in text
    assert {u.username for u in await c.store.list_users()} == {"admin", "olga"}
    done = {(e.action, e.result) for e in await c.audit(actor="admin")}
    assert {("addUser", "success"), ("addUser", "refused"), ("setUserRoles", "success"),
            ("setUserPassword", "success"), ("createApiKey", "success"), ("revokeApiKey", "success"),
            ("removeUser", "success")} <= done


async def test_other_roles_are_refused_and_own_password(c: CentralAdmin) -> None:
    async with browser(c) as http:
        assert (await log_in(http, "olga")).status == 303
        async with http.get("/ui/dashboard") as resp:
            text = await resp.text()
        assert 'href="/ui/users"' not in text and 'href="/ui/account"' in text
        token = await csrf(http)
        async with http.get("/ui/users") as resp:
            text = await resp.text()
        assert resp.status == 403 and "olga (roles: registration-officer) may not call listUsers" in text
        for path, form in (("/ui/users", {"username": "x", "password": "a long enough password",
                                          "role-system-administrator": "true"}),
                           ("/ui/api-keys", {"name": "sneaky", "role-system-administrator": "true"}),
                           ("/ui/users/admin/remove", {"confirm": "yes"})):
            status, _, text = await post(http, path, {"_csrf": token, **form})
            assert status == 403 and "may not call" in text, path
        # her own password: the current one checked, then every session ends, this one too
        status, _, text = await post(http, "/ui/account/password", {"_csrf": token, "current_password": "wrong one",
                                                                    "new_password": NEW_PASSWORD,
                                                                    "repeat": NEW_PASSWORD})
        assert status == 401 and 'id="own-current_password-error"' in text
        status, where, _ = await post(http, "/ui/account/password", {"_csrf": token, "current_password": PASSWORD,
                                                                     "new_password": NEW_PASSWORD,
                                                                     "repeat": NEW_PASSWORD})
        assert status == 303 and where.startswith("/ui/login?reason=Your+password+was+changed")
        async with http.get("/ui/account", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"].startswith("/ui/login?next=/ui/account")
        assert (await log_in(http, "olga", NEW_PASSWORD)).status == 303
    assert {u.username for u in await c.store.list_users()} == {"admin", "olga"}
    refused = {e.action for e in await c.audit(actor="olga", result="refused")}
    assert {"addUser", "createApiKey", "removeUser", "changeOwnPassword"} <= refused
