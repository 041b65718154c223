"""The central server's admin API over real HTTP, on SQLite and PostgreSQL: the registry, trust services and
signing keys changed by the roles that may, refused to the others, published; registration requests submitted
by a security server, shown with their verified signature, approved and rejected; bad input refused with a
precise message; every change and every refusal in the audit log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from central_admin_kit import CentralAdmin, central_admin, pem

from gateway.admin.central.routes import central_api
from gateway.admin.openapi import build_document
from gateway.admin.roles import CENTRAL_ROLES
from gateway.central.management import build_request
from gateway.central.publisher import latest_publication
from gateway.globalconf.model import GlobalConf
from gateway.identifiers import SecurityServerId
from gateway.server.regclient import submit

pytestmark = pytest.mark.integration

SS3 = SecurityServerId.parse("DEV/GOV/1003/ss3")


@pytest_asyncio.fixture
async def c(database_url: str, tmp_path: Path) -> AsyncIterator[CentralAdmin]:
    async with central_admin(database_url, tmp_path) as harness:
        yield harness


async def published(c: CentralAdmin) -> GlobalConf:
    pub = await latest_publication(c.central.engine)
    assert pub is not None
    return GlobalConf.from_dict(json.loads(pub.data)["signed"])


async def test_registry_trust_and_keys_by_role_then_published(c: CentralAdmin) -> None:
    officer, security, sysadmin = (await c.api_key("registration-officer"), await c.api_key("security-officer"),
                                   await c.api_key("system-administrator"))
    observer, auditor = await c.api_key("observer"), await c.api_key("auditor")
    # (1) the document the server serves is the one generated for its instance
    status, doc = await c.call("getOpenApi")
    assert status == 200 and doc == build_document(central_api("DEV"))
    # (2) the registration officer registers a member, a subsystem, a server with its certificate, a client, a group
    auth = c.pki.issue_auth(SS3)
    steps = [
        ("addMember", {}, {"id": "DEV/GOV/1003", "name": "Agency C"}),
        ("addSubsystem", {"member_id": "DEV:GOV:1003"}, {"code": "registry"}),
        ("addServer", {}, {"id": str(SS3), "address": "ss3.example.org:5500"}),
        ("addAuthCert", {"server_id": "DEV:GOV:1003:ss3"}, {"pem": pem(auth.cert)}),
        ("addServerClient", {"server_id": "DEV:GOV:1003:ss3"}, {"client": "DEV/GOV/1003/registry"}),
        ("addGlobalGroup", {}, {"id": "DEV/partners", "description": "partner agencies"}),
        ("addGlobalGroupMember", {"group_id": "DEV:partners"}, {"client": "DEV/GOV/1003/registry"}),
    ]
    for operation, params, body in steps:
        status, answer = await c.call(operation, params=params, key=officer, json=body)
        assert status == 201, (operation, answer)
    status, server = await c.call("getServer", params={"server_id": "DEV:GOV:1003:ss3"}, key=observer)
    assert status == 200 and server["auth_certs"] == [auth.sha256] and server["clients"] == ["DEV/GOV/1003/registry"]
    # (3) the security officer trusts the CA and a TSA and rolls the signing key over
    status, ca = await c.call("addCa", key=security, json={"name": "Test CA", "pem": pem(c.pki.ca_cert),
                                                           "ocsp_urls": ["http://127.0.0.1:1/ocsp"]})
    assert status == 201 and ca["ocsp_urls"] == ["http://127.0.0.1:1/ocsp"]
    status, _ = await c.call("addTsa", key=security, json={"name": "Test TSA", "url": "http://127.0.0.1:1/tsa",
                                                           "pem": pem(c.pki.ca_cert)})
    assert status == 201
    _, keys = await c.call("listSigningKeys", key=observer)
    [old] = keys["items"]
    status, new = await c.call("createSigningKey", key=security)
    assert status == 201 and new["state"] == "inactive" and new["number"] == old["number"] + 1
    _, anchor = await c.call("getAnchor", key=observer)
    assert len(anchor["keys"]) == 2  # anchored before it signs
    status, early = await c.call("retireSigningKey", params={"keyid": old["keyid"]}, key=security)
    assert status == 409 and "only active key" in early["message"]
    status, active = await c.call("activateSigningKey", params={"keyid": new["keyid"]}, key=security)
    assert status == 200 and active["state"] == "active"
    status, twice = await c.call("activateSigningKey", params={"keyid": new["keyid"]}, key=security)
    assert status == 409 and "is active, not inactive" in twice["message"]
    status, retired = await c.call("retireSigningKey", params={"keyid": old["keyid"][:12]}, key=security)
    assert status == 200 and retired["state"] == "retired"
    status, last = await c.call("retireSigningKey", params={"keyid": new["keyid"]}, key=security)
    assert status == 409 and "only active key" in last["message"]
    # (4) the system administrator publishes now; the configuration says all of it
    status, version = await c.call("publishGlobalConf", key=sysadmin)
    assert status == 201
    conf = await published(c)
    assert conf.version == version["version"]
    listed = conf.server(SS3)
    assert listed is not None and listed.auth_certs == frozenset({auth.sha256})
    _, versions = await c.call("listGlobalConfVersions", key=auditor, params={})
    assert versions["items"][0]["version"] == version["version"] and versions["total"] >= 2
    # (5) the roles that may not are refused, and the refusals are audited
    for key, operation, body in [(observer, "addMember", {"id": "DEV/GOV/9", "name": "x"}),
                                 (security, "addMember", {"id": "DEV/GOV/9", "name": "x"}),
                                 (officer, "addCa", {"name": "x", "pem": "x"}),
                                 (auditor, "listMembers", None), (officer, "publishGlobalConf", None)]:
        kwargs = {"json": body} if body is not None else {}
        status, answer = await c.call(operation, key=key, **kwargs)
        assert status == 403, (operation, answer)
        [entry] = [e for e in await c.audit(action=operation) if e.details["correlation_id"] == answer["detail"]]
        assert (entry.result, entry.status) == ("refused", 403)
    status, answer = await c.call("listMembers")
    assert status == 401
    # (6) every change is in the audit log with who made it; the auditor may read it, the observer may not
    status, log = await c.call("listAuditLog", key=auditor, params={})
    assert status == 200
    done = {(e["action"], e["actor"]) for e in log["items"] if e["result"] == "success"}
    officer_id = "apikey:" + officer[4:20]
    assert {(op, officer_id) for op, _, _ in steps} <= done
    security_id = "apikey:" + security[4:20]
    assert {("activateSigningKey", security_id), ("retireSigningKey", security_id)} <= done
    status, _ = await c.call("listAuditLog", key=observer)
    assert status == 403


async def test_registration_requests_listed_verified_approved_and_rejected(c: CentralAdmin) -> None:
    officer, observer = await c.api_key("registration-officer"), await c.api_key("observer")
    await c.call("addMember", key=officer, json={"id": "DEV/GOV/1003", "name": "Agency C"})
    await c.call("addCa", key=await c.api_key("security-officer"), json={"name": "Test CA", "pem": pem(c.pki.ca_cert)})
    first, second = c.pki.issue_auth(SS3), c.pki.issue_auth(SecurityServerId.parse("DEV/GOV/1003/ss4"))
    now = datetime.now(UTC)
    for cert in (first, second):
        await submit(f"{c.central.url}/registration", build_request(
            "auth_cert_reg", server=cert.identity, signer_key=cert.key, signer_cert=cert.cert, now=now,
            address="ss3.example.org:5500"))
    # (1) the officer sees the queue, each request with its verified signature
    status, queue = await c.call("listRegistrationRequests", key=observer, params={"state": "submitted"})
    assert status == 200 and queue["total"] == 2
    one, two = queue["items"]
    assert one["signature"]["verified"] is True and one["signature"]["signer_cert_sha256"] == first.sha256
    # (2) approve the first (the server joins the registry), reject the second with a reason
    token = await c.user_token("olga", "registration-officer")
    status, approved = await c.call("approveRegistrationRequest", params={"request_id": str(one["id"])},
                                    token=token, json={})
    assert status == 200 and (approved["state"], approved["decided_by"]) == ("approved", "olga")
    status, rejected = await c.call("rejectRegistrationRequest", params={"request_id": str(two["id"])},
                                    token=token, json={"comment": "unknown server"})
    assert status == 200 and (rejected["state"], rejected["comment"]) == ("rejected", "unknown server")
    status, again = await c.call("approveRegistrationRequest", params={"request_id": str(two["id"])},
                                 token=token, json={})
    assert status == 409 and "is rejected already" in again["message"]
    _, server = await c.call("getServer", params={"server_id": "DEV:GOV:1003:ss3"}, key=observer)
    assert server["auth_certs"] == [first.sha256]
    # (3) the decisions are audited under the officer's name
    entries = await c.audit(action="approveRegistrationRequest")
    assert [(e.actor, e.result) for e in entries] == [("olga", "refused"), ("olga", "success")]
    assert entries[1].details["registration_request"]["server"] == str(SS3)


@pytest.mark.parametrize(
    ("operation", "params", "body", "status", "message"),
    [
        ("addMember", {}, {"id": "XX/GOV/1", "name": "x"}, 400, "belongs to instance 'XX'; this server serves"),
        ("addMember", {}, {"id": "DEV/GOV/1", "name": "  "}, 400, "body.name '  ' must be 1-1024 characters, not"),
        ("addMember", {}, {"id": "DEV/GOV/a;b", "name": "x"}, 400, "member_code 'a;b' contains a forbidden"),
        ("addServer", {}, {"id": "DEV/GOV/1/ss", "address": "host:99999"}, 400, "body.address 'host:99999' must be"),
        ("getMember", {"member_id": "DEV:GOV"}, None, 400, "member identifier 'DEV/GOV' has 2 parts"),
        ("getMember", {"member_id": "DEV:GOV:404"}, None, 404, "member DEV/GOV/404 is not registered"),
        ("getRegistrationRequest", {"request_id": "x"}, None, 400, "request_id 'x' is not a positive integer"),
        ("getRegistrationRequest", {"request_id": "77"}, None, 404, "registration request 77 does not exist"),
        ("retireSigningKey", {"keyid": "abc"}, None, 400, "path parameter keyid 'abc' must be 8-64 hex digits"),
        ("addCa", {}, {"name": "CA", "pem": "not a certificate"}, 400, "certificate of CA 'CA'"),
        ("addUser", {}, {"username": "bob", "password": "correct horse battery", "roles": ["service-administrator"]},
         400, "body.roles[0] 'service-administrator' is not one of"),
    ],
)
async def test_bad_input_is_refused_precisely_and_audited(
    c: CentralAdmin, operation: str, params: dict[str, str], body: object, status: int, message: str,
) -> None:
    key = await c.api_key("system-administrator", "registration-officer", "security-officer", "observer")
    kwargs = {"json": body} if body is not None else {}
    got, answer = await c.call(operation, params=params, key=key, **kwargs)
    assert got == status and message in answer["message"], answer
    [entry] = [e for e in await c.audit(action=operation) if e.details["correlation_id"] == answer["detail"]]
    assert (entry.status, entry.result) == (status, "refused")


async def test_undeclared_methods_get_405_with_allow(c: CentralAdmin) -> None:
    async with c.http.request("PUT", c.url + "/api/v1/members") as resp:
        assert resp.status == 405
        assert {m.strip() for m in resp.headers["Allow"].split(",")} == {"GET", "POST"}


CENTRAL_PATH_VALUES = {
    "member_id": "DEV:GOV:9", "server_id": "DEV:GOV:9:ss9", "group_id": "DEV:nobody", "client_id": "DEV:GOV:9",
    "subsystem_code": "sub", "fingerprint": "00" * 32, "name": "nobody", "keyid": "00" * 32, "request_id": "1",
    "username": "nobody", "key_id": "0123456789abcdef",
}


async def test_every_endpoint_against_every_role(c: CentralAdmin) -> None:
    """Each role's session calls every non-public route (an empty body where one is needed): a role the route
    names gets past authorisation, every other role gets 403 naming the route, each refusal audited."""
    tokens = {role: await c.user_token(role.replace("-", ""), role) for role in CENTRAL_ROLES}
    routes = sorted((r for r in central_api("DEV").routes if not r.public), key=lambda r: r.operation_id == "logout")
    mismatches, denied = [], 0
    for route in routes:
        for role in CENTRAL_ROLES:
            kwargs: dict[str, Any] = {"json": {}} if route.request is not None else {}
            status, body = await c.request(route.method, route.path.format(**CENTRAL_PATH_VALUES), token=tokens[role],
                                           **kwargs)
            if role in route.roles and status in (401, 403):
                mismatches.append(f"{route.operation_id} as {role}: {status} {body}")
            if role not in route.roles:
                denied += 1
                if status != 403 or f"may not call {route.operation_id}" not in body["message"]:
                    mismatches.append(f"{route.operation_id} as {role}: expected 403, got {status} {body}")
    assert mismatches == []
    assert len([e for e in await c.audit(result="refused") if e.status == 403]) == denied
