"""The admin API's pure core: session tokens, API keys, lock-out, request validation, pagination, the route
table and the OpenAPI document generated from it."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from jsonschema import Draft202012Validator

from gateway.admin import auth
from gateway.admin.app import HANDLERS
from gateway.admin.formats import identifier
from gateway.admin.openapi import build_document
from gateway.admin.roles import ROLES, parse_roles
from gateway.admin.routes import PATH_PARAMS, ROUTES
from gateway.admin.schema import FORMATS, Page, page_body, paginate, parse_page, validate
from gateway.errors import IdentifierError, RequestError

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
POLICY = auth.TokenPolicy(issuer="gateway:DEV/GOV/1001/ss1", audience="gateway-admin", ttl_seconds=900)
KEY = auth.new_signing_key(NOW)
KEYS = {KEY.kid: KEY.private_key().public_key()}


def test_token_round_trip() -> None:
    token, claims = auth.issue_token(KEY, username="alice", roles=frozenset({"observer"}), policy=POLICY, now=NOW)
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": KEY.kid, "typ": "JWT"}
    got = auth.verify_token(token, keys=KEYS, policy=POLICY, now=NOW + timedelta(seconds=899))
    assert got == claims and got.expires_at == NOW + timedelta(seconds=900)


@pytest.mark.parametrize(
    ("at", "message"),
    [
        (NOW + timedelta(seconds=900), "session token has expired"),
        (NOW - timedelta(seconds=1), "session token is not valid yet"),
    ],
)
def test_token_validity_period_uses_the_given_clock(at: datetime, message: str) -> None:
    token, _ = auth.issue_token(KEY, username="alice", roles=frozenset({"observer"}), policy=POLICY, now=NOW)
    with pytest.raises(RequestError, match=message) as e:
        auth.verify_token(token, keys=KEYS, policy=POLICY, now=at)
    assert (e.value.status, e.value.xroad_type) == (401, "Client.Unauthorized")


def _sign(payload: dict[str, Any], **headers: Any) -> str:
    return jwt.encode(payload, KEY.private_key(), algorithm="ES256", headers={"kid": KEY.kid, **headers})


BASE = {"iss": POLICY.issuer, "aud": POLICY.audience, "sub": "alice", "iat": int(NOW.timestamp()),
        "nbf": int(NOW.timestamp()), "exp": int(NOW.timestamp()) + 60, "jti": "x", "roles": ["observer"]}


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (_sign({k: v for k, v in BASE.items() if k != "jti"}), "session token lacks the 'jti' claim"),
        (_sign({k: v for k, v in BASE.items() if k != "exp"}), "session token lacks the 'exp' claim"),
        (_sign({**BASE, "roles": ["root"]}), "session token roles are malformed"),
        (_sign({**BASE, "roles": "observer"}), "session token roles are malformed"),
        (_sign({**BASE, "sub": 7}), "session token is not valid"),
        (jwt.encode(BASE, KEY.private_key(), algorithm="ES256"), "session token has no valid 'kid' header"),
        (jwt.encode(BASE, "secret-secret-secret-secret-long", algorithm="HS256", headers={"kid": KEY.kid}),
         "algorithm 'HS256' is not accepted"),
        ("x" * 9000, "session token is longer than 8192 characters"),
    ],
)
def test_bad_tokens(token: str, message: str) -> None:
    with pytest.raises(RequestError, match=message.replace("(", r"\(")):
        auth.verify_token(token, keys=KEYS, policy=POLICY, now=NOW)


def test_retired_keys_verify_for_one_token_lifetime() -> None:
    old = replace(KEY, retired_at=NOW)
    new = auth.new_signing_key(NOW)
    assert auth.active_key([old, new]) == new
    assert auth.usable_keys([old, new], now=NOW + timedelta(seconds=899), ttl_seconds=900) == [old, new]
    assert auth.usable_keys([old, new], now=NOW + timedelta(seconds=900), ttl_seconds=900) == [new]
    assert auth.active_key([old]) is None


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [(0, None), (4, None), (5, 60), (6, 120), (7, 240), (11, 3600), (500, 3600)],
)
def test_lockout_doubles_up_to_the_cap(failures: int, seconds: int | None) -> None:
    until = auth.lockout_until(failures, NOW, max_failures=5, base_seconds=60, max_seconds=3600)
    assert until == (None if seconds is None else NOW + timedelta(seconds=seconds))


def test_api_keys() -> None:
    key_id, digest, key = auth.new_api_key()
    got_id, secret = auth.split_api_key(key)
    assert got_id == key_id and auth.api_key_matches(secret, digest)
    assert not auth.api_key_matches(secret[:-1] + ("A" if secret[-1] != "A" else "B"), digest)
    assert secret not in digest


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def.ghi", ("bearer", "abc.def.ghi")),
        ("bearer  abc", ("bearer", "abc")),
        ("X-Road-ApiKey token=gwk_x", ("apikey", "gwk_x")),
        ("x-road-apikey TOKEN=gwk_y", ("apikey", "gwk_y")),
    ],
)
def test_authorization_header(header: str, expected: tuple[str, str]) -> None:
    assert auth.parse_authorization(header) == expected


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "authentication required"),
        ("", "authentication required"),
        ("Digest x", "Authorization scheme 'Digest' is not supported"),
        ("X-Road-ApiKey key=1", "Authorization scheme 'X-Road-ApiKey' is not supported"),
    ],
)
def test_bad_authorization_header(header: str | None, message: str) -> None:
    with pytest.raises(RequestError, match=message) as e:
        auth.parse_authorization(header)
    assert e.value.status == 401


def test_passwords() -> None:
    hashed = auth.hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert auth.verify_password(hashed, "correct horse battery")
    assert not auth.verify_password(hashed, "wrong horse battery")
    assert not auth.verify_password(None, "correct horse battery")  # unknown user: same work, False
    assert not auth.verify_password(hashed, "x" * 2000)
    with pytest.raises(RequestError, match="password is shorter than 12 characters"):
        auth.hash_password("short")


def test_roles() -> None:
    assert parse_roles(["auditor", "observer", "auditor"]) == frozenset({"auditor", "observer"})
    with pytest.raises(RequestError, match="role 'root' is unknown"):
        parse_roles(["root"])
    with pytest.raises(RequestError, match="at least one role is required"):
        parse_roles([])
    with pytest.raises(RequestError, match="may not call addUser; it needs one of: system-administrator"):
        auth.check_roles(auth.Principal(name="bob", kind="jwt", roles=frozenset({"observer"})),
                         frozenset({"system-administrator"}), operation="addUser")


SCHEMA = {"type": "object", "additionalProperties": False, "required": ["a"],
          "properties": {"a": {"type": "string", "maxLength": 3}, "n": {"type": "number", "minimum": 0},
                         "l": {"type": "array", "maxItems": 1, "items": {"type": "integer"}},
                         "e": {"type": ["string", "null"], "enum": ["x", None]}}}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({}, "body.a is required"),
        ({"a": "abcd"}, "body.a is longer than 3 characters"),
        ({"a": 1}, "body.a must be string, not integer"),
        ({"a": "x", "n": True}, "body.n must be number, not boolean"),
        ({"a": "x", "n": -1}, "body.n -1 is less than 0"),
        ({"a": "x", "n": float("nan")}, "body.n must be number, not a non-finite number"),
        ({"a": "x", "l": [1, 2]}, "body.l has more than 1 items"),
        ({"a": "x", "l": ["1"]}, r"body.l\[0\] must be integer"),
        ({"a": "x", "e": "y"}, "body.e 'y' is not one of x, None"),
        ({"a": "x", "z": 1}, "body.z is not a known field"),
    ],
)
def test_validate(value: Any, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        validate(value, SCHEMA)


def test_validate_accepts() -> None:
    validate({"a": "x", "n": 1.5, "l": [3], "e": None}, SCHEMA)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": "0"}, r"limit=0 is not in \[1, 1000\]"),
        ({"limit": "1001"}, r"limit=1001 is not in \[1, 1000\]"),
        ({"offset": "-3"}, "offset='-3' is not a non-negative integer"),
        ({"limit": "\uff11"}, "is not a non-negative integer"),  # a full-width digit
    ],
)
def test_bad_pages(query: dict[str, str], message: str) -> None:
    with pytest.raises(RequestError, match=message):
        parse_page(query)


def test_pagination() -> None:
    page = parse_page({"limit": "2", "offset": "3"})
    items, total = paginate(list(range(6)), page)
    assert page_body(list(items), total=total, page=page) == {"items": [3, 4], "total": 6, "limit": 2, "offset": 3}
    assert parse_page({}) == Page(limit=100, offset=0)


def _formats(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        found = {schema["format"]} if isinstance(schema.get("format"), str) else set()
        return found.union(*(_formats(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_formats(v) for v in schema))
    return set()


def test_route_table_is_consistent() -> None:
    ids = [r.operation_id for r in ROUTES]
    assert len(ids) == len(set(ids))
    assert len({(r.method, r.path) for r in ROUTES}) == len(ROUTES)
    assert set(ids) == set(HANDLERS)
    for r in ROUTES:
        assert set(r.path_params) <= set(PATH_PARAMS), r.operation_id
        assert r.public or r.roles <= set(ROLES)
        for schema in (r.request, r.response, *(p.schema for p in r.query)):
            if schema is not None:  # a valid 2020-12 schema whose own formats are all checked
                Draft202012Validator.check_schema(schema)
                assert _formats(schema) <= set(FORMATS) | {"date-time", "binary"}, r.operation_id
        if r.request is not None:
            assert r.method in ("POST", "PUT", "PATCH")


def test_openapi_document() -> None:
    doc = build_document()
    assert doc["openapi"] == "3.1.0"
    ops = [op for item in doc["paths"].values() for op in item.values()]
    assert len(ops) == len(ROUTES)
    login = doc["paths"]["/api/v1/login"]["post"]
    assert login["security"] == [] and login["x-roles"] == ["public"]
    add = doc["paths"]["/api/v1/clients"]["post"]
    assert add["x-roles"] == ["registration-officer"]
    assert {"201", "400", "401", "403", "409", "413"} <= set(add["responses"])
    listing = doc["paths"]["/api/v1/clients"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "offset"}
    assert build_document() == doc  # deterministic


def test_docs_list_every_operation() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "admin-api.md").read_text()
    missing = [r.operation_id for r in ROUTES if f"| `{r.operation_id}` | `{r.method} {r.path}` |" not in doc]
    assert missing == [], "regenerate the role table in docs/admin-api.md"


def test_every_path_parameter_is_declared_with_the_rules() -> None:
    doc = build_document()
    for path, item in doc["paths"].items():
        names = set(re.findall(r"\{([^{}]+)\}", path))
        for op in item.values():
            declared = {p["name"]: p for p in op.get("parameters", ()) if p["in"] == "path"}
            assert set(declared) == names, (path, op["operationId"])
            assert all(p["required"] for p in declared.values())
    [activate] = [p for p in doc["paths"]["/api/v1/token/certificates/{sha256}/activate"]["put"]["parameters"]]
    assert activate["name"] == "sha256"


@pytest.mark.parametrize(
    ("value", "schema", "message"),
    [
        ("DEV/GOV", "client", "client identifier 'DEV/GOV' must be INSTANCE/CLASS/MEMBER or"),
        ("DEV/GOV/1001/..", "client", "subsystem_code may not be '..'"),
        ("DEV/GOV/1001/a", "service", "service identifier 'DEV/GOV/1001/a' has 4 parts; expected 5"),
        ("DEV:GOV:1001:a/b", "client-path", "must use ':' between parts"),
    ],
)
def test_identifier_formats_name_the_part_at_fault(value: str, schema: str, message: str) -> None:
    kind, _, where = schema.partition("-")
    with pytest.raises(IdentifierError, match=re.escape(message)):
        validate(value, identifier(kind, in_path=bool(where)), where="body.id")


@pytest.mark.parametrize(
    ("value", "ok"),
    [("DEV/GOV/1001", True), ("DEV/GOV/1001/consumer", True), ("DEV/GOV/10 01", False), ("DEV/GOV/1001/...", True),
     ("DEV/./1001", False), ("DEV/GOV/" + "x" * 256, False), ("DEV/GOV/1001/a;b", False)],
)
def test_identifier_pattern_agrees_with_the_parser(value: str, ok: bool) -> None:
    schema = identifier("client")
    by_pattern = re.fullmatch(schema["pattern"].strip("^$"), value) is not None and not re.search(
        schema["not"]["pattern"], value)
    assert by_pattern is ok
    if ok:
        validate(value, schema)
    else:
        with pytest.raises(RequestError):
            validate(value, schema)


def test_central_docs_list_every_operation() -> None:
    from pathlib import Path

    from gateway.admin.central.routes import central_api

    doc = (Path(__file__).resolve().parents[2] / "docs" / "central-admin-api.md").read_text()
    missing = [r.operation_id for r in central_api("DEV").routes
               if f"| `{r.operation_id}` | `{r.method} {r.path}` |" not in doc]
    assert missing == [], "regenerate the role table in docs/central-admin-api.md"
