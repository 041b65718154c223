"""Admin API authentication and authorisation over real HTTP on loopback, on SQLite and PostgreSQL: session
token attacks, API keys, wrong passwords and lock-out, the endpoint x role matrix, malformed identifiers; every
refusal is checked in the audit log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from admin_kit import PASSWORD, AdminHarness, admin_harness

from gateway.admin import auth
from gateway.admin.roles import ROLES, Role
from gateway.admin.routes import ROUTES, ROUTES_BY_ID, Route

pytestmark = pytest.mark.integration


@pytest.fixture
async def h(database_url: str, tmp_path: Path) -> AsyncIterator[AdminHarness]:
    async with admin_harness(database_url, tmp_path) as harness:
        yield harness


async def test_login_me_logout(h: AdminHarness) -> None:
    token = await h.user_token("alice", "observer", "auditor")
    status, me = await h.call("getMe", token=token)
    assert status == 200
    assert (me["name"], me["kind"], me["roles"]) == ("alice", "jwt", ["observer", "auditor"])
    assert (await h.call("logout", token=token))[0] == 204
    status, body = await h.call("getMe", token=token)
    assert status == 401 and "revoked by a logout" in body["message"]
    [login] = await h.audit(action="login")
    assert (login.actor, login.auth, login.result) == ("alice", "password", "success")
    assert login.details["request"] == {"username": "alice", "password": "<redacted>"}
    assert PASSWORD not in json.dumps([e.to_dict() for e in await h.audit()])


async def test_password_change_and_removal_end_sessions_and_roles_apply_at_once(h: AdminHarness) -> None:
    admin = await h.user_token("root", "system-administrator")
    token = await h.user_token("alice", "observer")
    assert (await h.call("listClients", token=token))[0] == 200
    # roles are read at every call: taking observer away works on the token already issued
    status, _ = await h.call("setUserRoles", params={"username": "alice"}, token=admin, json={"roles": ["auditor"]})
    assert status == 200
    status, body = await h.call("listClients", token=token)
    assert status == 403 and "alice (roles: auditor) may not call listClients" in body["message"]
    h.clock.advance(1)
    new_password = "another long passphrase"
    status, _ = await h.call("setUserPassword", params={"username": "alice"}, token=admin,
                             json={"password": new_password})
    assert status == 204
    status, body = await h.call("getMe", token=token)
    assert status == 401 and "session ended when the password was changed" in body["message"]
    token = await h.login("alice", new_password)
    assert (await h.call("getMe", token=token))[0] == 200
    assert (await h.call("removeUser", params={"username": "alice"}, token=admin))[0] == 204
    status, body = await h.call("getMe", token=token)
    assert status == 401 and "user 'alice' no longer exists" in body["message"]


async def test_change_own_password(h: AdminHarness) -> None:
    token = await h.user_token("alice", "observer")
    status, body = await h.call("changeOwnPassword", token=token,
                                json={"current_password": "wrong password!", "new_password": "x" * 12})
    assert status == 401 and "user name or password is wrong" in body["message"]
    h.clock.advance(1)
    status, _ = await h.call("changeOwnPassword", token=token,
                             json={"current_password": PASSWORD, "new_password": "a brand new passphrase"})
    assert status == 204
    assert (await h.call("getMe", token=token))[0] == 401
    assert await h.login("alice", "a brand new passphrase")
    [entry] = await h.audit(action="changeOwnPassword", result="success")
    assert entry.details["request"] == {"current_password": "<redacted>", "new_password": "<redacted>"}


async def test_session_key_rotation(h: AdminHarness) -> None:
    admin = await h.user_token("root", "system-administrator")
    old_kid = (await h.store.signing_key(now=h.clock())).kid
    status, new = await h.call("rotateSessionKey", token=admin)
    assert status == 201 and new["kid"] != old_kid and new["active"]
    # the old key still verifies the tokens it signed until they expire
    assert (await h.call("getMe", token=admin))[0] == 200
    fresh = await h.login("root")
    assert auth.jwt.get_unverified_header(fresh)["kid"] == new["kid"]
    status, keys = await h.call("listSessionKeys", token=fresh)
    assert status == 200
    assert {(k["kid"], k["active"], k["retired_at"] is None) for k in keys["items"]} == {
        (old_kid, False, False), (new["kid"], True, True)}
    # one token lifetime later the retired key is gone: its tokens are refused by kid, before any expiry check
    h.clock.advance(h.ctx.settings.session_ttl_seconds)
    status, body = await h.call("getMe", token=admin)
    assert status == 401 and f"unknown or retired key {old_kid!r}" in body["message"]


async def test_api_keys_roles_and_revocation(h: AdminHarness) -> None:
    admin = await h.user_token("root", "system-administrator")
    status, created = await h.call("createApiKey", token=admin, json={"name": "monitoring", "roles": ["observer"]})
    assert status == 201 and created["created_by"] == "root"
    key = created["key"]
    assert key.startswith("gwk_" + created["id"] + ".")
    assert (await h.call("listClients", apikey=key))[0] == 200
    status, body = await h.call("addClient", apikey=key, json={"id": "DEV/GOV/1001/x"})
    assert status == 403 and f"apikey:{created['id']} (roles: observer) may not call addClient" in body["message"]
    status, me = await h.call("getMe", apikey=key)
    assert me == {"name": f"apikey:{created['id']}", "kind": "apikey", "roles": ["observer"], "expires_at": None}
    status, listed = await h.call("listApiKeys", token=admin)
    assert key not in json.dumps(listed)  # the key itself is shown once, never again
    # a wrong secret for a real id is refused like an unknown key
    forged = key[: key.index(".") + 1] + "B" * 43
    assert (await h.call("getMe", apikey=forged))[1]["message"] == "API key is not valid"
    assert (await h.call("revokeApiKey", params={"key_id": created["id"]}, token=admin))[0] == 204
    status, body = await h.call("listClients", apikey=key)
    assert status == 401 and body["message"] == f"API key {created['id']} has been revoked"
    status, body = await h.call("revokeApiKey", params={"key_id": created["id"]}, token=admin)
    assert status == 409 and "already revoked" in body["message"]
    status, body = await h.call("logout", apikey=(await h.call(
        "createApiKey", token=admin, json={"name": "x", "roles": ["observer"]}))[1]["key"])
    assert status == 403 and "needs a session token" in body["message"]
    refused = await h.audit(result="refused")
    assert {(e.action, e.status, e.auth) for e in refused} >= {
        ("addClient", 403, "apikey"), ("listClients", 401, "apikey"), ("revokeApiKey", 409, "jwt")}
    [revoke] = await h.audit(action="revokeApiKey", result="success")
    assert (revoke.actor, revoke.details["path_params"]) == ("root", {"key_id": created["id"]})


async def test_wrong_passwords_lock_the_account_with_back_off(h: AdminHarness) -> None:
    await h.add_user("alice", "observer")
    s = h.ctx.settings
    for i in range(1, s.max_failed_logins):
        status, body = await h.call("login", json={"username": "alice", "password": f"wrong password {i}"})
        assert (status, body["message"]) == (401, "user name or password is wrong")
    status, body = await h.call("login", json={"username": "alice", "password": "wrong again!!"})
    assert status == 429 and body["type"] == "Client.AccountLocked"
    assert "account 'alice' is now locked until" in body["message"]
    # locked: even the right password is refused, without being checked
    status, body = await h.call("login", json={"username": "alice", "password": PASSWORD})
    assert status == 429 and "is locked after 5 wrong passwords" in body["message"]
    h.clock.advance(s.lockout_seconds)
    # the next wrong password locks it again at once, for twice as long
    status, body = await h.call("login", json={"username": "alice", "password": "still wrong!!"})
    assert status == 429
    user = await h.store.get_user("alice")
    assert user.locked_until == h.clock() + timedelta(seconds=2 * s.lockout_seconds)
    h.clock.advance(2 * s.lockout_seconds)
    assert await h.login("alice")
    assert (await h.store.get_user("alice")).failed_logins == 0
    # an unknown user gets the same answer as a wrong password, and is never locked
    for _ in range(s.max_failed_logins + 1):
        status, body = await h.call("login", json={"username": "nobody", "password": PASSWORD})
        assert (status, body["message"]) == (401, "user name or password is wrong")
    failures = await h.audit(action="login", result="refused")
    assert len(failures) == s.max_failed_logins + 2 + s.max_failed_logins + 1
    assert {e.actor for e in failures} == {"alice", "nobody"}


async def test_unlock_by_administrator(h: AdminHarness) -> None:
    admin = await h.user_token("root", "system-administrator")
    await h.add_user("alice", "observer")
    for _ in range(h.ctx.settings.max_failed_logins):
        await h.call("login", json={"username": "alice", "password": "wrong password"})
    assert (await h.call("login", json={"username": "alice", "password": PASSWORD}))[0] == 429
    assert (await h.call("unlockUser", params={"username": "alice"}, token=admin))[0] == 204
    assert await h.login("alice")


# ---------------------------------------------------------------------------------------- role matrix

PATH_VALUES = {
    "client_id": "DEV:GOV:1001:consumer", "service_id": "DEV:GOV:1001:consumer:pets", "username": "nobody",
    "key_id": "0123456789abcdef", "code": "friends", "fingerprint": "00" * 32, "seq": "0",
    "token_key_id": "00" * 32, "sha256": "00" * 32, "size": "1",
}


async def test_every_endpoint_against_every_role(h: AdminHarness) -> None:
    """Each role's session calls every non-public route (with an empty body where one is needed): a role
    the route names gets past authorisation (any answer but 401/403), every other role gets 403 naming the
    route, and each refusal is in the audit log."""
    tokens = {role: await h.user_token(role.replace("-", ""), role) for role in ROLES}
    mismatches: list[str] = []
    denied = 0
    routes = sorted((r for r in ROUTES if not r.public), key=lambda r: r.operation_id == "logout")  # logout last
    for route in routes:
        for role in ROLES:
            kwargs: dict[str, Any] = {"json": {}} if route.request is not None else {}
            status, body = await h.request(route.method, route.path.format(**PATH_VALUES), token=tokens[role],
                                           **kwargs)
            allowed = role in route.roles
            if allowed and status in (401, 403):
                mismatches.append(f"{route.operation_id} as {role}: {status} {body}")
            if not allowed:
                denied += 1
                expected = f"may not call {route.operation_id}; it needs one of"
                if status != 403 or expected not in body["message"] or body["type"] != "Client.Forbidden":
                    mismatches.append(f"{route.operation_id} as {role}: expected 403, got {status} {body}")
    assert mismatches == []
    forbidden = [e for e in await h.audit(result="refused") if e.status == 403]
    assert len(forbidden) == denied
    assert all(e.auth == "jwt" and e.actor in {r.replace("-", "") for r in ROLES} for e in forbidden)


def test_role_table_is_what_the_docs_promise() -> None:
    """Spot checks of the role matrix that docs/admin-api.md states in words."""
    def who(op: str) -> set[Role]:
        return set(ROUTES_BY_ID[op].roles)

    reads = {"listClients", "getClient", "listServices", "getService", "listAccessRights", "listLocalGroups",
             "getGlobalConfStatus"}
    for op in reads:
        assert who(op) == set(ROLES) - {"auditor"}, op
    auditor_ops = {r.operation_id for r in ROUTES if "auditor" in r.roles}
    assert auditor_ops == {"logout", "getMe", "changeOwnPassword", "listMessageLogRecords", "exportMessageLogRecord",
                           "listMessageLogCheckpoints", "getMessageLogCheckpoint", "proveMessageLogInclusion",
                           "proveMessageLogConsistency", "exportMessageLogArchive", "getTransparencyCounts"}
    for r in ROUTES:
        if r.tag == "messagelog":
            assert set(r.roles) == {"auditor"} and r.audit_reads
        if r.tag in ("users", "api-keys", "session-keys", "audit-log"):
            assert set(r.roles) == {"system-administrator"}, r.operation_id
    public: list[Route] = [r for r in ROUTES if r.public]
    assert {r.operation_id for r in public} == {"getOpenApi", "login"}


async def test_unknown_route_and_method_are_json_and_audited(h: AdminHarness) -> None:
    status, body = await h.request("GET", "/api/v1/nothing-here")
    assert (status, body["type"]) == (404, "Client.NotFound")
    status, body = await h.request("PUT", "/api/v1/login")
    assert (status, body["type"]) == (405, "Client.MethodNotAllowed")
    entries = await h.audit()
    assert {(e.method, e.status, e.result) for e in entries} == {("GET", 404, "refused"), ("PUT", 405, "refused")}
