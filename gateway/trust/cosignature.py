"""Witness keys and cosignatures: C2SP tlog-cosignature v1.0.1, Ed25519 type 0x04 (pure).

docs/witness.md. A witness cosigns a checkpoint (c2sp.org/tlog-checkpoint@v1.0.0) to say "as of time t, the
consistent tree head with the largest size I have seen for this origin has this root". The cosignature is one
signed-note line (c2sp.org/signed-note@v1.0.0) under the witness's key name::

    message  = b"cosignature/v1\\n" + b"time " + decimal(t) + b"\\n" + <checkpoint note text, final \\n included>
    key ID   = SHA-256(name || 0x0A || 0x04 || public key, 32 bytes)[:4]
    line     = "— " name " " base64(key ID || uint64be(t) || Ed25519 signature, 64 bytes) "\\n"

A witness's verification key is written as a C2SP vkey: ``<name>+<hex key ID>+<base64(0x04 || public key)>``.

This module knows nothing of checkpoints beyond their text: checking what the text says is the caller's
(:mod:`gateway.messagelog.checkpoint`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.errors import TrustError

TYPE_COSIGNATURE = 0x04  # timestamped Ed25519 cosignature (c2sp.org/tlog-cosignature)
SIG_PREFIX = "\u2014 "  # em dash, space (c2sp.org/signed-note)
COSIGNATURE_HEADER = b"cosignature/v1\n"
PAYLOAD_BYTES = 4 + 8 + 64  # key ID, timestamp, signature
MAX_NAME_LENGTH = 255
MAX_TIMESTAMP = 2**63 - 1

_NAME_RE = re.compile(r"[^\s+\x00-\x1f\x7f]{1,255}")
_HEX8_RE = re.compile(r"[0-9a-f]{8}")


def _bad(message: str) -> TrustError:
    return TrustError(f"cosignature: {message}")


def check_key_name(name: str) -> str:
    """``name`` if it can be a signed-note key name: non-empty, no spaces, no '+', no control characters.

    Raises:
        TrustError: it cannot.
    """
    if not _NAME_RE.fullmatch(name):
        raise _bad(f"key name {name[:80]!r} must be 1 to {MAX_NAME_LENGTH} characters without spaces, '+' or "
                   "control characters")
    return name


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID of a cosignature key (module docstring)."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([TYPE_COSIGNATURE]) + public_key).digest()[:4]


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessKey:
    """A witness's verification key: its name and its Ed25519 public key (32 bytes)."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.public_key) != 32:
            raise _bad(f"an Ed25519 public key has 32 bytes, not {len(self.public_key)}")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    @property
    def vkey(self) -> str:
        """The C2SP vkey text of this key."""
        blob = base64.b64encode(bytes([TYPE_COSIGNATURE]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    @classmethod
    def of_private_key(cls, name: str, private_key: ed25519.Ed25519PrivateKey) -> WitnessKey:
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(name=name, public_key=raw)


def parse_vkey(text: str) -> WitnessKey:
    """Parse a C2SP vkey of a cosignature key (type 0x04).

    Raises:
        TrustError: not ``name+hex8+base64``, another signature type, or a key ID that does not match.
    """
    parts = text.split("+", 2)  # a name has no '+'; base64 may
    if len(parts) != 3:
        raise _bad(f"vkey {text[:120]!r} is not <name>+<hex key ID>+<base64 key>")
    name, hex_id, blob = parts
    check_key_name(name)
    if not _HEX8_RE.fullmatch(hex_id):
        raise _bad(f"vkey key ID {hex_id[:20]!r} is not 8 lower-case hex digits")
    try:
        raw = base64.b64decode(blob, validate=True)
    except binascii.Error as e:
        raise _bad("vkey key is not standard base64") from e
    if not raw or raw[0] != TYPE_COSIGNATURE:
        kind = f"0x{raw[0]:02x}" if raw else "none"
        raise _bad(f"vkey signature type is {kind}; a witness key has type 0x04 (timestamped Ed25519)")
    key = WitnessKey(name=name, public_key=raw[1:])
    if key.key_id.hex() != hex_id:
        raise _bad(f"vkey key ID {hex_id} is not the key ID of its name and key ({key.key_id.hex()})")
    return key


def signed_message(note_text: bytes, timestamp: int) -> bytes:
    """What a cosignature signs: the header, the time line and the checkpoint's note text."""
    if not note_text.endswith(b"\n"):
        raise _bad("checkpoint text must end with a newline")
    return COSIGNATURE_HEADER + b"time " + str(timestamp).encode("ascii") + b"\n" + note_text


@dataclass(frozen=True, slots=True, kw_only=True)
class Cosignature:
    """One verified or produced cosignature line."""

    name: str
    key_id: bytes
    timestamp: int  # POSIX seconds
    signature: bytes  # 64 bytes

    def line(self) -> bytes:
        """The signed-note signature line, newline included."""
        blob = base64.b64encode(self.key_id + struct.pack(">Q", self.timestamp) + self.signature).decode("ascii")
        return f"{SIG_PREFIX}{self.name} {blob}\n".encode()


def cosign(note_text: bytes, name: str, private_key: ed25519.Ed25519PrivateKey, timestamp: int) -> Cosignature:
    """Cosign a checkpoint's note text at ``timestamp`` (POSIX seconds)."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise _bad(f"timestamp {timestamp} is out of range")
    key = WitnessKey.of_private_key(name, private_key)
    sig = private_key.sign(signed_message(note_text, timestamp))
    return Cosignature(name=name, key_id=key.key_id, timestamp=timestamp, signature=sig)


def decode_payload(name: str, payload: bytes) -> Cosignature:
    """A cosignature from a signature line's name and decoded payload (key ID, time, signature).

    Raises:
        TrustError: the payload is not 76 bytes.
    """
    if len(payload) != PAYLOAD_BYTES:
        raise _bad(f"a cosignature by {name[:80]} has {PAYLOAD_BYTES} bytes, not {len(payload)}")
    (timestamp,) = struct.unpack(">Q", payload[4:12])
    return Cosignature(name=name, key_id=payload[:4], timestamp=timestamp, signature=payload[12:])


def parse_line(line: bytes | str) -> Cosignature:
    """Parse one cosignature line (``— name base64``, with or without its final newline).

    Raises:
        TrustError: not a signature line, or not a cosignature's size.
    """
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.removesuffix("\n")
    if not text.startswith(SIG_PREFIX):
        raise _bad("a signature line starts with an em dash and a space")
    parts = text[len(SIG_PREFIX):].split(" ")
    if len(parts) != 2:
        raise _bad("a signature line is '— <key name> <base64 signature>'")
    name, blob = parts
    check_key_name(name)
    try:
        payload = base64.b64decode(blob, validate=True)
    except binascii.Error as e:
        raise _bad(f"the signature of {name[:80]} is not standard base64") from e
    return decode_payload(name, payload)


def verify(cosignature: Cosignature, note_text: bytes, key: WitnessKey) -> int:
    """Verify a cosignature of ``note_text`` by ``key``; return its timestamp.

    Raises:
        TrustError: another key (name or key ID), or the signature does not verify.
    """
    if cosignature.name != key.name or cosignature.key_id != key.key_id:
        raise _bad(f"signature line by {cosignature.name[:80]} ({cosignature.key_id.hex()}) is not by "
                   f"{key.name} ({key.key_id.hex()})")
    public = ed25519.Ed25519PublicKey.from_public_bytes(key.public_key)
    try:
        public.verify(cosignature.signature, signed_message(note_text, cosignature.timestamp))
    except InvalidSignature as e:
        raise _bad(f"cosignature by {key.name} does not verify") from e
    return cosignature.timestamp


def verified_witnesses(
    note_text: bytes, lines: Iterable[Cosignature], keys: Mapping[str, WitnessKey],
) -> dict[str, int]:
    """The witnesses (by name) whose cosignature among ``lines`` verifies, with its timestamp.

    Lines from names not in ``keys``, or with another key ID, are ignored (c2sp.org/signed-note: unknown keys
    are ignored); a line from a known key that fails raises.

    Raises:
        TrustError: a cosignature by a known key does not verify.
    """
    found: dict[str, int] = {}
    for line in lines:
        key = keys.get(line.name)
        if key is None or line.key_id != key.key_id:
            continue
        found[line.name] = verify(line, note_text, key)
    return found


__all__ = [
    "TYPE_COSIGNATURE",
    "Cosignature",
    "WitnessKey",
    "check_key_name",
    "cosign",
    "decode_payload",
    "key_id",
    "parse_line",
    "parse_vkey",
    "signed_message",
    "verified_witnesses",
    "verify",
]
