"""Checkpoints: C2SP tlog-checkpoint text in a C2SP signed note, signed with ECDSA P-256 or RSA; tampering."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkihelpers import make_cert

from gateway.errors import TrustError
from gateway.messagelog import merkle
from gateway.messagelog.checkpoint import (
    Checkpoint,
    NoteSignature,
    add_signature,
    checkpoint_origin,
    key_id,
    parse_checkpoint,
    parse_note,
    sign_checkpoint,
    verify_checkpoint,
)
from gateway.protocol.signatures import KeySigner
from gateway.trust import keys

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ORIGIN = checkpoint_origin("DEV/GOV/1001/ss1")
ROOT = merkle.root([merkle.leaf_hash(b"record %d" % i) for i in range(5)])


def make_signer(key_type: keys.KeyType = "ec-p256") -> KeySigner:
    key = keys.generate_private_key(key_type)
    return KeySigner(key=key, cert=make_cert(key, "signing key", now=NOW))


SIGNER = make_signer()
OTHER = make_signer()
CHECKPOINT = Checkpoint(origin=ORIGIN, size=5, root_hash=ROOT)
NOTE = sign_checkpoint(CHECKPOINT, SIGNER)


def test_note_layout_follows_c2sp() -> None:
    text, _, sigs = NOTE.decode().partition("\n\n")
    assert text.split("\n") == ["DEV/GOV/1001/ss1/messagelog", "5", base64.b64encode(ROOT).decode()]
    lines = sigs.split("\n")
    assert lines[-1] == "" and len(lines) == 2
    assert lines[0].startswith("\u2014 DEV/GOV/1001/ss1/messagelog ")
    blob = base64.b64decode(lines[0].rsplit(" ", 1)[1])
    spki = SIGNER.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    # Signature type 0x02 (ECDSA as transparency-dev/witness): key ID = SHA-256(SPKI)[:4], DER signature.
    assert blob[:4] == hashlib.sha256(spki).digest()[:4] == key_id(ORIGIN, SIGNER.cert)
    pub = SIGNER.cert.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(blob[4:], (text + "\n").encode(), ec.ECDSA(hashes.SHA256()))  # an independent check


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_sign_and_verify(key_type: keys.KeyType) -> None:
    signer = SIGNER if key_type == "ec-p256" else make_signer(key_type)
    note = sign_checkpoint(CHECKPOINT, signer)
    assert verify_checkpoint(note, signer.cert, origin=ORIGIN) == CHECKPOINT
    assert parse_checkpoint(parse_note(note).text) == CHECKPOINT


def test_witness_signature_can_be_added_and_is_ignored_by_log_verifiers() -> None:
    text = CHECKPOINT.text()
    witness_sig = keys.sign_bytes(OTHER._key, text)[1]  # a cosigner's DER ECDSA signature
    cosigned = add_signature(NOTE, NoteSignature(key_name="witness.example/w1", key_id=key_id("w", OTHER.cert),
                                                 signature=witness_sig))
    assert cosigned.startswith(NOTE)
    assert len(parse_note(cosigned).signatures) == 2
    assert verify_checkpoint(cosigned, SIGNER.cert, origin=ORIGIN) == CHECKPOINT
    # The same note verified as the witness's (its key name differs from the origin): not the log's key.
    with pytest.raises(TrustError, match="no signature by the log key"):
        verify_checkpoint(cosigned, OTHER.cert)
    with pytest.raises(TrustError, match="already has a signature"):
        add_signature(cosigned, parse_note(cosigned).signatures[1])


def _replace_sig_byte(note: bytes) -> bytes:
    text, _, line = note.decode().partition("\n\n")
    name_part, blob = line.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 0x01
    return f"{text}\n\n{name_part} {base64.b64encode(bytes(raw)).decode()}\n".encode()


def _unknown_only(note: bytes) -> bytes:
    text, _, line = note.decode().partition("\n\n")
    return f"{text}\n\n\u2014 someone.else/key {line.rstrip().rsplit(' ', 1)[1]}\n".encode()


OTHER_ROOT = base64.b64encode(b"\x07" * 32).decode()


@pytest.mark.parametrize(
    ("note", "message"),
    [
        (NOTE.replace(b"\n5\n", b"\n6\n"), "does not verify"),
        (NOTE.replace(base64.b64encode(ROOT), OTHER_ROOT.encode()), "does not verify"),
        (_replace_sig_byte(NOTE), "does not verify"),
        (_unknown_only(NOTE), "no signature by the log key"),
        (sign_checkpoint(CHECKPOINT, OTHER), "no signature by the log key"),
        (NOTE.replace(b"\n\n", b"\n"), "no blank line before its signatures"),
        (NOTE[:-1], "does not end with a newline"),
        (NOTE.replace(b"\n5\n", b"\n\t5\n"), "control characters"),
        (NOTE.replace(b"\n5\n", b"\n05\n"), "not a decimal number without leading zeros"),
        (NOTE.replace(b"\n5\n", b"\n-5\n"), "not a decimal number without leading zeros"),
        (NOTE.replace(base64.b64encode(ROOT), base64.b64encode(b"\x07" * 31)), "base64 of 32 bytes"),
        (NOTE.replace("\u2014 ".encode(), b"- "), "does not start with an em dash"),
        (NOTE.replace("\u2014 ".encode(), "\u2014 a b ".encode()), "is not '\u2014 <key name>"),
        (NOTE.rstrip(b"\n") + b"!\n", "not standard padded base64"),
        (NOTE.split(b"\n\n")[0] + b"\n\n\xe2\x80\x94 k AAAA\n", "shorter than a key ID"),
        (NOTE.split(b"\n\n")[0] + b"\n\n", "no signature lines"),
        (b"\xff" + NOTE, "not valid UTF-8"),
        (NOTE.replace(b"messagelog\n5\n", b"messagelog\n"), "fewer than three lines"),
        (b"x" * 70_000, "larger than"),
        (b"a\nb\n\n" + NOTE.split(b"\n\n")[1], "fewer than three lines"),
    ],
)
def test_tampered_or_malformed_notes_are_refused(note: bytes, message: str) -> None:
    with pytest.raises(TrustError, match=message):
        verify_checkpoint(note, SIGNER.cert, origin=ORIGIN)


def test_other_origin_is_refused() -> None:
    with pytest.raises(TrustError, match="is not the expected 'DEV/GOV/1002/ss2/messagelog'"):
        verify_checkpoint(NOTE, SIGNER.cert, origin=checkpoint_origin("DEV/GOV/1002/ss2"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"origin": "has space"}, "without spaces"),
        ({"origin": "a+b"}, "without spaces, '\\+'"),
        ({"origin": ""}, "must be non-empty"),
        ({"size": -1}, "not an unsigned 64-bit integer"),
        ({"size": 2**64}, "not an unsigned 64-bit integer"),
        ({"size": True}, "not an unsigned 64-bit integer"),
        ({"root_hash": b"short"}, "root hash must be 32 bytes"),
        ({"extensions": ("",)}, "extension lines must be non-empty"),
        ({"extensions": ("a\nb",)}, "single lines"),
    ],
)
def test_checkpoint_values_are_checked(kwargs: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"origin": ORIGIN, "size": 1, "root_hash": ROOT, **kwargs}
    with pytest.raises(TrustError, match=message):
        Checkpoint(**values)  # type: ignore[arg-type]


def test_extension_lines_round_trip() -> None:
    cp = Checkpoint(origin=ORIGIN, size=0, root_hash=merkle.EMPTY_ROOT, extensions=("ext one",))
    assert verify_checkpoint(sign_checkpoint(cp, SIGNER), SIGNER.cert) == cp
