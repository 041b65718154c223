"""The signed envelope: signing (central server side) and the shape checks of parsing (client rule 1)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from globalconf_sim import KeyPair, make_cert, make_key_pair

from gateway.errors import ConfigError, GlobalConfError, InvalidSignatureValue, MalformedGlobalConf, TrustError
from gateway.globalconf.envelope import parse_envelope, sign_envelope, verify_signature
from gateway.globalconf.model import cert_fingerprint
from gateway.trust.canonical import canonical_bytes

BAD_SIGNATURE = InvalidSignatureValue.type_name()
MALFORMED = MalformedGlobalConf.type_name()

NOW = datetime(2026, 11, 27, 13, 0, 0, tzinfo=UTC)
SIGNED = {"format": 1, "instance": "DEV", "version": 3, "text": "Agency \u00c4", "list": [3, 1, 2]}


@pytest.fixture(scope="module")
def ec_pair() -> KeyPair:
    return make_key_pair("signer", now=NOW)


@pytest.fixture(scope="module")
def rsa_pair() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, make_cert(key, "rsa signer", now=NOW)


def test_sign_and_parse_round_trip(ec_pair: KeyPair, rsa_pair: KeyPair) -> None:
    data = sign_envelope(SIGNED, [ec_pair, rsa_pair])
    assert canonical_bytes(json.loads(data)) == data
    signed, signed_bytes, signatures = parse_envelope(data)
    assert signed == SIGNED
    assert signed_bytes == canonical_bytes(SIGNED)
    assert signed_bytes in data
    assert [s.alg for s in signatures] == ["ecdsa-p256-sha256", "rsa-v1_5-sha256"]
    assert [s.keyid for s in signatures] == [cert_fingerprint(ec_pair[1]), cert_fingerprint(rsa_pair[1])]
    verify_signature(signatures[0], ec_pair[1], signed_bytes)
    verify_signature(signatures[1], rsa_pair[1], signed_bytes)


def test_verify_signature_refuses_other_data_and_other_key(ec_pair: KeyPair, rsa_pair: KeyPair) -> None:
    _, signed_bytes, (sig,) = parse_envelope(sign_envelope(SIGNED, [ec_pair]))
    with pytest.raises(TrustError, match="does not verify") as info:
        verify_signature(sig, ec_pair[1], signed_bytes + b" ")
    assert info.value.xroad_type == BAD_SIGNATURE
    with pytest.raises(TrustError, match="does not match the key"):
        verify_signature(sig, rsa_pair[1], signed_bytes)


def _p384_pair() -> KeyPair:
    key = ec.generate_private_key(ec.SECP384R1())
    return key, make_cert(key, "p384", now=NOW)


def test_sign_envelope_refuses_bad_keys(ec_pair: KeyPair, rsa_pair: KeyPair) -> None:
    cases: list[tuple[list[KeyPair], str]] = [
        ([], "no configuration-signing key"),
        ([ec_pair, ec_pair], "is listed twice"),
        ([(ec_pair[0], rsa_pair[1])], "does not belong to it"),
        ([_p384_pair()], "P-256"),
    ]
    for keys, expected in cases:
        with pytest.raises(ConfigError) as info:
            sign_envelope(SIGNED, keys)
        assert expected in info.value.message


def _env(sigs: Any, signed: Any = SIGNED) -> bytes:
    return canonical_bytes({"signatures": sigs, "signed": signed})


GOOD_SIG = {"alg": "ecdsa-p256-sha256", "keyid": "ab" * 32, "sig": base64.b64encode(b"x" * 70).decode()}

BAD: list[tuple[str, bytes, str]] = [
    ("empty", b"", "is not valid JSON"),
    ("not json", b"<html>502 Bad Gateway</html>", "is not valid JSON"),
    ("not utf-8", b'{"a":"\xff"}', "is not valid JSON"),
    ("truncated", _env([GOOD_SIG])[:-7], "is not valid JSON"),
    ("pretty printed", json.dumps({"signatures": [GOOD_SIG], "signed": SIGNED}, indent=1).encode(),
     "is not in canonical JSON form"),
    ("keys out of order", b'{"signed":{},"signatures":[]}', "is not in canonical JSON form"),
    ("trailing newline", _env([GOOD_SIG]) + b"\n", "is not in canonical JSON form"),
    ("deeply nested", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("top is a list", b"[]", "must be an object with exactly the keys signatures and signed"),
    ("extra key", canonical_bytes({"signatures": [GOOD_SIG], "signed": {}, "x": 1}), "exactly the keys"),
    ("no signatures", _env([]), "signatures must be a non-empty list"),
    ("signatures object", _env({"a": 1}), "signatures must be a non-empty list"),
    ("too many", _env([GOOD_SIG] * 9), "has 9 signatures; at most 8"),
    ("signed is a list", _env([GOOD_SIG], [1]), "signed must be an object"),
    ("sig missing key", _env([{"alg": "ecdsa-p256-sha256", "keyid": "ab" * 32}]),
     "signatures[0] must be an object"),
    ("sig unknown alg", _env([{**GOOD_SIG, "alg": "hmac-sha256"}]),
     "signatures[0].alg 'hmac-sha256' is not one of"),
    ("keyid upper", _env([{**GOOD_SIG, "keyid": "AB" * 32}]),
     "signatures[0].keyid must be 64 lower-case hex"),
    ("keyid short", _env([GOOD_SIG, {**GOOD_SIG, "keyid": "ab"}]), "signatures[1].keyid must be 64"),
    ("sig not base64", _env([{**GOOD_SIG, "sig": "not base64!"}]),
     "signatures[0].sig must be standard base64"),
    ("sig bad padding", _env([{**GOOD_SIG, "sig": "abc"}]), "signatures[0].sig must be standard base64"),
    ("sig number", _env([{**GOOD_SIG, "sig": 5}]), "signatures[0].sig must be standard base64"),
]


@pytest.mark.parametrize(("data", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_parse_envelope_refuses_malformed(data: bytes, expected: str) -> None:
    with pytest.raises(GlobalConfError) as info:
        parse_envelope(data)
    assert info.value.message.startswith("global configuration ")
    assert expected in info.value.message
    assert info.value.xroad_type == MALFORMED
