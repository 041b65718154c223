"""The anchor: building, parsing, hashing, reading from a file, and precise refusals."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from globalconf_sim import KeyPair, make_cert, make_key_pair

from gateway.errors import ConfigError, GlobalConfError, MalformedGlobalConf
from gateway.globalconf.anchor import Anchor, anchor_hash, build_anchor
from gateway.globalconf.model import cert_fingerprint, cert_to_pem
from gateway.trust.canonical import canonical_bytes

MALFORMED = MalformedGlobalConf.type_name()

NOW = datetime(2026, 11, 27, 13, 0, 0, tzinfo=UTC)
URLS = ["http://127.0.0.1:4000/globalconf", "https://mirror.example/globalconf"]


@pytest.fixture(scope="module")
def pairs() -> list[KeyPair]:
    return [make_key_pair("k1", now=NOW), make_key_pair("k2", now=NOW)]


def test_build_and_parse(pairs: list[KeyPair]) -> None:
    data = build_anchor("DEV", URLS, [c for _, c in pairs], NOW)
    anchor = Anchor.from_bytes(data)
    assert anchor.instance == "DEV"
    assert anchor.generated_at == NOW
    assert anchor.download_urls == tuple(URLS)
    assert dict(anchor.keys) == {cert_fingerprint(c): c for _, c in pairs}
    assert anchor.to_bytes() == data
    doc = json.loads(data)
    assert [k["keyid"] for k in doc["keys"]] == sorted(cert_fingerprint(c) for _, c in pairs)
    assert anchor_hash(data) == hashlib.sha256(data).hexdigest()


def test_build_anchor_refuses_bad_input(pairs: list[KeyPair]) -> None:
    certs = [c for _, c in pairs]
    cases: list[tuple[Callable[[], bytes], str]] = [
        (lambda: build_anchor("DEV", [], certs, NOW), "download_urls: must not be empty"),
        (lambda: build_anchor("DEV", ["file:///etc/passwd"], certs, NOW), "is not an http(s) URL"),
        (lambda: build_anchor("DEV", URLS, [], NOW), "keys: must not be empty"),
        (lambda: build_anchor("DEV", URLS, [certs[0], certs[0]], NOW), "keys[1]: duplicate keyid"),
        (lambda: build_anchor("D V", URLS, certs, NOW), "instance code 'D V' contains a forbidden"),
    ]
    for build, expected in cases:
        with pytest.raises(ConfigError) as info:
            build()
        assert "cannot build the anchor" in info.value.message
        assert expected in info.value.message


def _doc(pairs: list[KeyPair]) -> dict[str, Any]:
    return json.loads(build_anchor("DEV", URLS, [c for _, c in pairs], NOW))  # type: ignore[no-any-return]


def _use_p384_key(d: dict[str, Any]) -> None:
    cert = make_cert(ec.generate_private_key(ec.SECP384R1()), "p384", now=NOW)
    d["keys"] = [{"keyid": cert_fingerprint(cert), "certificate": cert_to_pem(cert)}]


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("format 2", lambda d: d.update(format=2), "anchor field format: format 2 is not known"),
    ("missing keys", lambda d: d.pop("keys"), "anchor field (top): missing key 'keys'"),
    ("unknown key", lambda d: d.update(extra=True), "anchor field (top): unknown key 'extra'"),
    ("instance number", lambda d: d.update(instance=1),
     "anchor field instance: expected an identifier string"),
    ("time", lambda d: d.update(generated_at="today"),
     "anchor field generated_at: 'today' is not an RFC 3339"),
    ("urls empty", lambda d: d.update(download_urls=[]), "anchor field download_urls: must not be empty"),
    ("url duplicate", lambda d: d.update(download_urls=[URLS[0], URLS[0]]),
     "download_urls[1]: duplicate URL"),
    ("keyid mismatch", lambda d: d["keys"][0].update(keyid="00" * 32),
     "anchor field keys[0].keyid: is not the SHA-256"),
    ("keys unsorted", lambda d: d["keys"].reverse(), "anchor field keys[1]: keyid"),
    ("key type", _use_p384_key, "anchor field keys[0].certificate: EC key on curve secp384r1 is not allowed"),
]


@pytest.mark.parametrize(("mutate", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_anchor_documents(
    pairs: list[KeyPair], mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    d = _doc(pairs)
    mutate(d)
    with pytest.raises(GlobalConfError) as info:
        Anchor.from_bytes(canonical_bytes(d))
    assert expected in info.value.message
    assert info.value.xroad_type == MALFORMED


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "anchor is not valid JSON"),
        (b'{"format": 1}', "anchor is not in canonical JSON form"),
        (b"[[[[" * 50_000, "anchor is"),
    ],
    ids=["empty", "non-canonical", "deep"],
)
def test_anchor_bytes_not_canonical_json(data: bytes, expected: str) -> None:
    with pytest.raises(GlobalConfError, match="anchor") as info:
        Anchor.from_bytes(data)
    assert expected in info.value.message


def test_from_file(tmp_path: Path, pairs: list[KeyPair]) -> None:
    data = build_anchor("DEV", URLS, [c for _, c in pairs], NOW)
    path = tmp_path / "anchor.json"
    path.write_bytes(data)
    assert Anchor.from_file(path).to_bytes() == data

    with pytest.raises(ConfigError) as info:
        Anchor.from_file(tmp_path / "missing.json")
    assert f"anchor file {tmp_path / 'missing.json'} cannot be read" in info.value.message

    path.write_bytes(data.replace(b'"DEV"', b'"D V"'))
    with pytest.raises(ConfigError) as info:
        Anchor.from_file(path)
    assert f"anchor file {path} is not a valid anchor: anchor field instance" in info.value.message
