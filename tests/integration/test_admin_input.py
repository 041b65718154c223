"""Bad input to the admin API over real HTTP, on SQLite and PostgreSQL: forged and broken session tokens,
malformed credentials, malformed identifiers in every kind of field, malformed bodies and query parameters.
Each gets the right 4xx with a clear message and is found in the audit log by the response's correlation id.

One admin server per backend serves the whole module (these calls change nothing); tests stay independent
because each looks only at the audit entry of its own call.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from admin_kit import PASSWORD, AdminHarness, admin_harness, b64url, b64url_json
from cryptography.hazmat.primitives import serialization
from exchange_kit import database_urls

from gateway.admin import auth
from gateway.admin.roles import ROLES
from gateway.admin.routes import ROUTES_BY_ID
from gateway.admin.schema import Page
from gateway.admin.store import AuditEntry

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ROOT_TOKEN: dict[str, str] = {}  # harness URL -> a session token of user "root", who holds every role


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AdminHarness]:
    tmp = tmp_path_factory.mktemp(f"admin-{request.param}")
    async with database_urls(request.param, tmp, ["admin"]) as urls, admin_harness(urls["admin"], tmp) as h:
        await h.add_user("alice", "observer")
        ROOT_TOKEN[h.url] = await h.user_token("root", *ROLES)
        yield h


async def audit_entry(h: AdminHarness, correlation_id: str) -> AuditEntry:
    entries, _ = await h.store.list_audit(Page(limit=1000))
    [entry] = [e for e in entries if e.details.get("correlation_id") == correlation_id]
    return entry


async def _key(h: AdminHarness) -> auth.SigningKey:
    return await h.store.signing_key(now=h.clock())


def _forge(header: dict[str, Any], payload: dict[str, Any], sign: Any = None) -> str:
    signing_input = f"{b64url_json(header)}.{b64url_json(payload)}"
    signature = b"" if sign is None else sign(signing_input.encode())
    return f"{signing_input}.{b64url(signature)}"


def _payload(h: AdminHarness, **changes: Any) -> dict[str, Any]:
    now = int(h.clock().timestamp())
    payload = {"iss": h.ctx.token_policy.issuer, "aud": h.ctx.token_policy.audience, "sub": "alice",
               "iat": now, "nbf": now, "exp": now + 60, "jti": "j1", "roles": ["system-administrator"]}
    payload.update(changes)
    return payload


async def _token_expired(h: AdminHarness) -> str:
    ttl = h.ctx.settings.session_ttl_seconds
    token, _ = auth.issue_token(await _key(h), username="alice", roles=frozenset({"system-administrator"}),
                                policy=h.ctx.token_policy, now=h.clock() - timedelta(seconds=ttl + 1))
    return token


async def _token_tampered(h: AdminHarness) -> str:
    # a genuine observer token whose payload is changed to claim system-administrator; signature kept
    token, _ = auth.issue_token(await _key(h), username="alice", roles=frozenset({"observer"}),
                                policy=h.ctx.token_policy, now=h.clock())
    header, payload, signature = token.split(".")
    claims = json.loads(auth.jwt.utils.base64url_decode(payload))
    claims["roles"] = ["system-administrator"]
    return f"{header}.{b64url_json(claims)}.{signature}"


async def _token_alg_none(h: AdminHarness) -> str:
    return _forge({"alg": "none", "typ": "JWT", "kid": (await _key(h)).kid}, _payload(h))


async def _token_hs256_public_key(h: AdminHarness) -> str:
    key = await _key(h)
    public_pem = key.private_key().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _forge({"alg": "HS256", "typ": "JWT", "kid": key.kid}, _payload(h),
                  lambda data: hmac.new(public_pem, data, hashlib.sha256).digest())


async def _token_unknown_kid(h: AdminHarness) -> str:
    stranger = replace(auth.new_signing_key(h.clock()), kid="not-ours")
    token, _ = auth.issue_token(stranger, username="alice", roles=frozenset({"system-administrator"}),
                                policy=h.ctx.token_policy, now=h.clock())
    return token


async def _token_wrong_audience(h: AdminHarness) -> str:
    token, _ = auth.issue_token(await _key(h), username="alice", roles=frozenset({"system-administrator"}),
                                policy=replace(h.ctx.token_policy, audience="central-admin"), now=h.clock())
    return token


async def _token_wrong_issuer(h: AdminHarness) -> str:
    token, _ = auth.issue_token(await _key(h), username="alice", roles=frozenset({"system-administrator"}),
                                policy=replace(h.ctx.token_policy, issuer="gateway:DEV/GOV/1002/ss2"), now=h.clock())
    return token


async def _token_too_long_lived(h: AdminHarness) -> str:
    token, _ = auth.issue_token(await _key(h), username="alice", roles=frozenset({"system-administrator"}),
                                policy=replace(h.ctx.token_policy, ttl_seconds=86400), now=h.clock())
    return token


async def _token_garbage(h: AdminHarness) -> str:
    return "not.a.jwt"


async def _token_unknown_user(h: AdminHarness) -> str:
    token, _ = auth.issue_token(await _key(h), username="mallory", roles=frozenset({"system-administrator"}),
                                policy=h.ctx.token_policy, now=h.clock())
    return token


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_token_expired, "session token has expired"),
        (_token_tampered, "session token signature is not valid"),
        (_token_alg_none, "session token algorithm 'none' is not accepted; only ES256 is"),
        (_token_hs256_public_key, "session token algorithm 'HS256' is not accepted; only ES256 is"),
        (_token_unknown_kid, "session token is signed with unknown or retired key 'not-ours'"),
        (_token_wrong_audience, "session token is not for this audience (expected 'gateway-admin')"),
        (_token_wrong_issuer, "session token was not issued by this server (expected 'gateway:DEV/GOV/1001/ss1')"),
        (_token_too_long_lived, "session token lifetime is longer than this server issues"),
        (_token_garbage, "session token is malformed"),
        (_token_unknown_user, "user 'mallory' no longer exists"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[7:] if callable(v) else None,
)
async def test_bad_session_tokens_get_401_and_are_audited(shared: AdminHarness, make: Any, message: str) -> None:
    h = shared
    token = await make(h)
    status, body = await h.call("listUsers", token=token)
    assert status == 401
    assert body["type"] == "Client.Unauthorized"
    assert message in body["message"]
    entry = await audit_entry(h, body["detail"])
    assert (entry.result, entry.status, entry.auth, entry.remote) == ("refused", 401, "jwt", "127.0.0.1")
    assert message in entry.details["error"]
    assert entry.details["correlation_id"] == body["detail"]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "authentication required"),
        ("Basic YWxpY2U6cHc=", "Authorization scheme 'Basic' is not supported"),
        ("Bearer", "Authorization scheme 'Bearer' is not supported"),
        ("X-Road-ApiKey token=nonsense", "API key is malformed"),
        ("X-Road-ApiKey token=gwk_0123456789abcdef." + "A" * 43, "API key is not valid"),
    ],
)
async def test_missing_or_malformed_credentials(shared: AdminHarness, header: str | None, message: str) -> None:
    status, body = await shared.call("getMe", headers={"Authorization": header} if header else None)
    assert (status, body["type"]) == (401, "Client.Unauthorized")
    assert message in body["message"]
    entry = await audit_entry(shared, body["detail"])
    assert entry.action == "getMe"
    assert entry.result == "refused" and message in entry.details["error"]


PATH_VALUES = {
    "client_id": "DEV:GOV:1001:consumer", "service_id": "DEV:GOV:1001:consumer:pets", "username": "nobody",
    "key_id": "0123456789abcdef", "code": "friends", "fingerprint": "00" * 32, "seq": "0",
    "token_key_id": "00" * 32, "sha256": "00" * 32,
}

# ------------------------------------------------------------------------------------- bad identifiers

SERVICE = "DEV:GOV:1001:consumer:pets"


@pytest.mark.parametrize(
    ("operation", "params", "body", "query", "message"),
    [
        ("addClient", {}, {"id": "DEV/GOV"}, None,
         "client identifier 'DEV/GOV' must be INSTANCE/CLASS/MEMBER or INSTANCE/CLASS/MEMBER/SUBSYSTEM"),
        ("addClient", {}, {"id": "DEV/GOV/10 01/x"}, None, "member_code '10 01' contains a forbidden character ' '"),
        ("addClient", {}, {"id": "DEV/GOV/1001/a%3Bb"}, None, "contains a forbidden character '%'"),
        ("addClient", {}, {"id": "DEV/GOV/1001/.."}, None, "subsystem_code may not be '..'"),
        ("addClient", {}, {"id": "DEV/GOV/1001/\u0007"}, None, "forbidden control character U+0007"),
        ("addClient", {}, {"id": 42}, None, "body.id must be string, not integer"),
        ("getClient", {"client_id": "DEV:GOV"}, None, None, "client identifier 'DEV:GOV' in the path must be"),
        ("getClient", {"client_id": "DEV:GOV:1001:a;b"}, None, None, "contains a forbidden character ';'"),
        ("getClient", {"client_id": "DEV:GOV:1001:a%2Fb"}, None, None, "must use ':' between parts"),
        ("getService", {"service_id": "DEV:GOV:1001:consumer"}, None, None, "service identifier"),
        ("addService", {}, {"id": "DEV/GOV/1001/consumer", "url": "http://x/"}, None, "service identifier"),
        ("listServices", {}, None, {"provider": "DEV/GOV/1001"}, "subsystem identifier"),
        ("grantAccess", {"service_id": SERVICE}, {"subject": "BOGUS:DEV/GOV/1001"}, None,
         "access-right subject type 'BOGUS' is unknown"),
        ("grantAccess", {"service_id": SERVICE}, {"subject": "LOCALGROUP:a/b"}, None,
         "local group code 'a/b' contains a forbidden character '/'"),
        ("grantAccess", {"service_id": SERVICE}, {"subject": "GLOBALGROUP:DEV"}, None, "global group identifier"),
        ("revokeAccess", {"service_id": SERVICE}, None, {"subject": "SUBSYSTEM:DEV/GOV/x y/a"}, "forbidden"),
        ("addLocalGroup", {}, {"code": ".."}, None, "local group code may not be '..'"),
        ("addLocalGroupMember", {"code": "friends"}, {"client": "DEV/GOV/1001/x\u0001"}, None,
         "forbidden control character U+0001"),
        ("removeLocalGroupMember", {"code": "friends", "client_id": "DEV:GOV"}, None, None,
         "client identifier 'DEV:GOV' in the path must be"),
        ("addUser", {}, {"username": "-x", "password": PASSWORD, "roles": ["observer"]}, None,
         "user name '-x' is not valid"),
        ("addUser", {}, {"username": "bob", "password": "short", "roles": ["observer"]}, None,
         "password is shorter than 12 characters"),
        ("addUser", {}, {"username": "bob", "password": PASSWORD, "roles": ["root"]}, None,
         "body.roles[0] 'root' is not one of"),
        ("addUser", {}, {"username": "bob", "password": PASSWORD, "roles": []}, None, "body.roles has fewer than 1"),
        ("addUser", {}, {"username": "bob", "password": PASSWORD, "roles": ["observer"], "admin": True}, None,
         "body.admin is not a known field"),
        ("listClients", {}, None, {"limit": "0"}, "query parameter limit=0 is not in [1, 1000]"),
        ("listClients", {}, None, {"offset": "-1"}, "query parameter offset='-1' is not a non-negative integer"),
        ("exportMessageLogRecord", {"seq": "x1"}, None, None, "record sequence number 'x1' is not"),
    ],
)
async def test_malformed_input_gets_400_and_is_audited(
    shared: AdminHarness, operation: str, params: dict[str, str], body: Any, query: dict[str, str] | None,
    message: str,
) -> None:
    h, token = shared, ROOT_TOKEN[shared.url]
    kwargs: dict[str, Any] = {}
    if body is not None:
        kwargs["json"] = body
    if query is not None:
        kwargs["params"] = query
    route = ROUTES_BY_ID[operation]
    path = route.path.format(**{**PATH_VALUES, **params})
    status, answer = await h.request(route.method, path, token=token, **kwargs)
    assert status == 400, answer
    assert message in answer["message"]
    entry = await audit_entry(h, answer["detail"])
    assert (entry.action, entry.result, entry.status, entry.actor) == (operation, "refused", 400, "root")
    assert message in entry.details["error"]


@pytest.mark.parametrize(
    ("data", "content_type", "status", "message"),
    [
        (b"{", "application/json", 400, "request body is not valid JSON"),
        (b"id=1", "application/x-www-form-urlencoded", 415, "request body must be application/json"),
        (b'{"id": "' + b"x" * 60000 + b'"}', "application/json", 413, "is larger than 51200 bytes"),
        (b"[]", "application/json", 400, "body must be object, not array"),
    ],
)
async def test_bad_bodies(shared: AdminHarness, data: bytes, content_type: str, status: int, message: str) -> None:
    token = ROOT_TOKEN[shared.url]
    got, body = await shared.call("addClient", token=token, data=data, headers={"Content-Type": content_type})
    assert got == status and message in body["message"]
    entry = await audit_entry(shared, body["detail"])
    assert (entry.action, entry.status, entry.result) == ("addClient", status, "refused")




@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("PATCH", "/api/v1/users", {"GET", "POST"}), ("GET", "/api/v1/login", {"POST"}),
     ("DELETE", "/api/v1/token/certificates/0011223344556677/activate", {"PUT"})],
)
async def test_method_not_allowed_names_the_allowed_methods(
    shared: AdminHarness, method: str, path: str, allow: set[str]
) -> None:
    async with shared.http.request(method, shared.url + path) as resp:
        body = await resp.json()
        assert resp.status == 405 and body["type"] == "Client.MethodNotAllowed", body
        assert {m.strip() for m in resp.headers["Allow"].split(",")} == allow
    entry = await audit_entry(shared, body["detail"])
    assert (entry.status, entry.result) == (405, "refused")
