"""The portal's pure core: the provider's discovery document, ID token rules (gateway/portal/oidc.py) and the
join of findUsage answers (gateway/portal/usage.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from gateway.errors import PeerError, TrustError, Unauthorized
from gateway.portal import oidc, usage

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
ISSUER = "https://idp.example"
KEY = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
KEYS = KeySet.import_key_set(KeySet([KEY]).as_dict(private=False))


def discovery(**changes: Any) -> bytes:
    doc = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }
    doc.update(changes)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def test_discovery_accepted() -> None:
    p = oidc.parse_discovery(discovery(), issuer=ISSUER)
    assert p.token_endpoint == f"{ISSUER}/token"


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"issuer": "https://evil.example"}, "names issuer"),
        ({"token_endpoint": None}, "no token_endpoint"),
        ({"jwks_uri": "file:///etc/passwd"}, "no jwks_uri"),
        ({"code_challenge_methods_supported": ["plain"]}, "PKCE"),
        ({"id_token_signing_alg_values_supported": ["HS256", "none"]}, "signs ID tokens with none of"),
    ],
)
def test_discovery_refused(changes: dict[str, Any], says: str) -> None:
    with pytest.raises(TrustError, match=says):
        oidc.parse_discovery(discovery(**changes), issuer=ISSUER)


def test_discovery_not_json() -> None:
    with pytest.raises(TrustError, match="not JSON"):
        oidc.parse_discovery(b"<html>", issuer=ISSUER)


def token(**changes: Any) -> str:
    claims = {
        "iss": ISSUER,
        "sub": "EE38001085718",
        "aud": "portal",
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 600,
        "nonce": "n1",
        "name": "Mari Maasikas",
    }
    claims.update(changes)
    return jwt.encode({"alg": "ES256", "kid": "k1"}, {k: v for k, v in claims.items() if v is not None}, KEY)


def verify(t: str, *, nonce: str | None = "n1", now: datetime = NOW) -> oidc.Citizen:
    return oidc.verify_id_token(t, KEYS, issuer=ISSUER, client_id="portal", nonce=nonce, now=now, leeway=30)


def test_id_token_accepted() -> None:
    c = verify(token())
    assert c.subject == "EE38001085718" and c.name == "Mari Maasikas"
    assert c.expires_at == NOW + timedelta(minutes=10)
    assert verify(token(nonce=None), nonce=None).subject == "EE38001085718"  # a session's token, checked again


@pytest.mark.parametrize(
    ("changes", "now", "says"),
    [
        ({"iss": "https://evil.example"}, NOW, "iss"),
        ({"aud": "another-client"}, NOW, "aud"),
        ({"nonce": "other"}, NOW, "nonce"),
        ({"nonce": None}, NOW, "nonce"),
        ({}, NOW + timedelta(minutes=11), "expired"),
        ({"sub": "38001085718"}, NOW, "country prefix"),
        ({"sub": None}, NOW, "sub"),
    ],
)
def test_id_token_refused(changes: dict[str, Any], now: datetime, says: str) -> None:
    with pytest.raises(Unauthorized, match=says):
        verify(token(**changes), now=now)


def test_forged_id_token_refused() -> None:
    other = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    forged = jwt.encode({"alg": "ES256", "kid": "k1"}, {"iss": ISSUER, "sub": "EE1", "aud": "portal"}, other)
    with pytest.raises(Unauthorized, match="signature does not verify"):
        verify(forged)
    with pytest.raises(Unauthorized, match="longer than"):
        verify("a" * (oidc.MAX_TOKEN_BYTES + 1))


def test_authorization_url_has_pkce_state_and_nonce() -> None:
    s = oidc.SignIn.new()
    url = oidc.authorization_url(
        oidc.parse_discovery(discovery(), issuer=ISSUER),
        client_id="portal",
        redirect_uri="https://portal.example/callback",
        sign_in=s,
    )
    assert f"state={s.state}" in url and f"nonce={s.nonce}" in url and "code_challenge_method=S256" in url
    assert s.code_verifier not in url
    assert oidc.SignIn.from_json(s.to_json()) == s


def item(role: str, message_id: str = "m1", **changes: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "logtime": "2026-12-01T10:00:00Z",
        "action": "DEV/GOV/1002/registry/persons GET /",
        "receiverCode": "1001",
        "receiverName": "Agency A",
        "receiverSystem": "consumer",
        "role": role,
        "messageId": message_id,
        "requestHash": "h-" + message_id,
        "status": 200,
        "purpose": "tax",
        "purposeText": "Tax audit",
        "legalBasis": "Act 1",
        "embargoUntil": None,
        "evidence": {"leaf": "x"},
    }
    d.update(changes)
    return d


def answer(*items: dict[str, Any]) -> list[usage.Usage]:
    return usage.parse_answer("DEV/GOV/1002/registry", {"total": len(items), "usages": list(items)})[1]


def proven(i: Any) -> usage.Proof:
    return usage.Proof(proven=i.get("evidence", {}).get("leaf") == "x", detail="leaf")


def test_join_pairs_both_sides_and_flags_one_sided() -> None:
    got = usage.join(
        [*answer(item("disclosure"), item("disclosure", "m2")), *answer(item("access"))], now=NOW, verify=proven
    )
    assert [(e.message_id, e.one_sided) for e in sorted(got, key=lambda e: e.message_id)] == [
        ("m1", None),
        ("m2", "disclosure"),
    ]
    assert all(e.proven and e.consistent for e in got)


def test_join_shows_disagreeing_sides_and_unproven_evidence() -> None:
    [e] = usage.join(
        answer(item("disclosure"), item("access", receiverSystem="other", evidence={"leaf": "y"})),
        now=NOW,
        verify=proven,
    )
    assert not e.consistent and not e.proven and e.proofs["disclosure"].proven


def test_embargoed_usage_shown_only_from_its_date() -> None:
    held = answer(item("disclosure", embargoUntil="2026-12-10T00:00:00Z"))
    assert usage.join(held, now=NOW, verify=proven) == []
    [e] = usage.join(held, now=datetime(2026, 12, 10, tzinfo=UTC), verify=proven)
    assert e.message_id == "m1"


def test_join_is_newest_first_and_keeps_a_repeated_record() -> None:
    got = usage.join(
        answer(item("access", "old", logtime="2026-11-01T00:00:00Z"), item("access", "new"), item("access", "new")),
        now=NOW,
        verify=proven,
    )
    assert [e.message_id for e in got] == ["new", "new", "old"]
    doc = usage.evidence_file("EE38001085718", got, now=NOW)
    assert doc["subject"] == "EE38001085718" and doc["generated"] == "2026-12-02T12:00:00Z"
    assert len(doc["entries"]) == 3


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([], "without total and usages"),
        ({"total": 1}, "without total and usages"),
        ({"total": 1, "usages": ["x"]}, r"usages\[0\] is not an object"),
        ({"total": 1, "usages": [item("access", messageId=None)]}, "messageId is missing"),
        ({"total": 1, "usages": [item("access", action="x" * 3000)]}, "action is missing or not a string"),
        ({"total": 1, "usages": [item("viewer")]}, "not access or disclosure"),
        ({"total": 1, "usages": [item("access", logtime="yesterday")]}, "logtime is not an RFC 3339 time"),
        ({"total": 1, "usages": [item("access", logtime="2026-12-01T10:00:00")]}, "no time zone"),
        ({"total": 1, "usages": [item("access", embargoUntil=5)]}, "embargoUntil is not"),
        ({"total": 1, "usages": [item("access", evidence=None)]}, "evidence is missing"),
        ({"total": 1, "usages": [item("access", purpose=7)]}, "purpose is not a string"),
    ],
)
def test_malformed_answers_refused(body: Any, says: str) -> None:
    with pytest.raises(PeerError, match=says):
        usage.parse_answer("DEV/GOV/1002/registry", body)
