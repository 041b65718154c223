"""C2SP tlog-cosignature v1.0.1 (type 0x04) against the checked vectors (docs/witness.md)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.errors import TrustError
from gateway.trust import cosignature as cs

WITNESS_VKEY = ("gw.example.gov/witness/EE/GOV/70000562/ss1+dc6d88df+"
                "BPPFhuZgH8m3qD2/9QYelzYUB3ZkcAsSAPu9nEUqp1Fb")
TEXT = (b"gw.example.gov/msglog/EE/GOV/70006317/ss1\n1234\n"
        b"7veWVtg4hS5Tp+HPv3NUqIFGZGQdsMn7efLRhFf1GoU=\n")
COSIG_LINE = ("\u2014 gw.example.gov/witness/EE/GOV/70000562/ss1 3G2I3wAAAABpVbkAd1o7osxUZhoSpIraabafMtpYG3adoUE"
              "xVoyLkjVIKAnqS1jggXrzXODJI6at/jAaI/OfL7jPVhsP/ZsdDEx8Aw==\n")
TIME = 1767225600


def _witness_private() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"demo-witness-seed").digest())


def test_vkey_of_the_demo_seed_is_the_checked_one() -> None:
    key = cs.WitnessKey.of_private_key("gw.example.gov/witness/EE/GOV/70000562/ss1", _witness_private())
    assert key.vkey == WITNESS_VKEY
    assert cs.parse_vkey(WITNESS_VKEY) == key


def test_cosign_gives_the_checked_line_and_it_verifies() -> None:
    key = cs.parse_vkey(WITNESS_VKEY)
    made = cs.cosign(TEXT, key.name, _witness_private(), TIME)
    assert made.line().decode() == COSIG_LINE
    parsed = cs.parse_line(COSIG_LINE)
    assert parsed == made
    assert cs.verify(parsed, TEXT, key) == TIME
    assert cs.verified_witnesses(TEXT, [parsed], {key.name: key}) == {key.name: TIME}


def test_a_changed_text_or_time_fails() -> None:
    key = cs.parse_vkey(WITNESS_VKEY)
    line = cs.parse_line(COSIG_LINE)
    with pytest.raises(TrustError, match="does not verify"):
        cs.verify(line, TEXT.replace(b"1234", b"1235"), key)
    later = cs.Cosignature(name=line.name, key_id=line.key_id, timestamp=TIME + 1, signature=line.signature)
    with pytest.raises(TrustError, match="does not verify"):
        cs.verify(later, TEXT, key)


def test_unknown_keys_are_ignored_known_failing_ones_raise() -> None:
    key = cs.parse_vkey(WITNESS_VKEY)
    other = cs.cosign(TEXT, "other.example/witness", ed25519.Ed25519PrivateKey.generate(), TIME)
    assert cs.verified_witnesses(TEXT, [other], {key.name: key}) == {}
    bad = cs.Cosignature(name=key.name, key_id=key.key_id, timestamp=TIME, signature=bytes(64))
    with pytest.raises(TrustError, match="does not verify"):
        cs.verified_witnesses(TEXT, [bad], {key.name: key})


@pytest.mark.parametrize(("vkey", "message"), [
    ("no-plus-signs", "is not <name>"),
    ("a b+dc6d88df+BPPFhuZgH8m3qD2/9QYelzYUB3ZkcAsSAPu9nEUqp1Fb", "without spaces"),
    ("gw.example.gov/witness/EE/GOV/70000562/ss1+DC6D88DF+BPPFhuZgH8m3qD2/9QYelzYUB3ZkcAsSAPu9nEUqp1Fb",
     "8 lower-case hex"),
    ("gw.example.gov/witness/EE/GOV/70000562/ss1+dc6d88df+not*base64", "not standard base64"),
    ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "type is 0x01"),
    ("gw.example.gov/witness/EE/GOV/70000562/ss2+dc6d88df+BPPFhuZgH8m3qD2/9QYelzYUB3ZkcAsSAPu9nEUqp1Fb",
     "is not the key ID"),
    ("n+00000000+" + base64.b64encode(b"\x04" + bytes(31)).decode(), "32 bytes"),
])
def test_bad_vkeys_are_refused_precisely(vkey: str, message: str) -> None:
    with pytest.raises(TrustError, match=message):
        cs.parse_vkey(vkey)


def test_bad_lines_are_refused() -> None:
    with pytest.raises(TrustError, match="em dash"):
        cs.parse_line("- name AAAA\n")
    with pytest.raises(TrustError, match="76 bytes"):
        cs.parse_line("\u2014 name " + base64.b64encode(bytes(70)).decode() + "\n")
    with pytest.raises(TrustError, match="newline"):
        cs.signed_message(b"no newline", 1)
