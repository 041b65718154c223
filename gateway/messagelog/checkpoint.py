"""Message-log checkpoints: the C2SP tlog-checkpoint body in a C2SP signed note, signed and verified (pure).

docs/messagelog.md. A checkpoint commits to one origin's Merkle tree (:mod:`gateway.messagelog.merkle`) at
one size. Its text follows c2sp.org/tlog-checkpoint::

    DEV/GOV/1001/ss1/messagelog            <- origin line: the log origin + ORIGIN_SUFFIX
    1234                                    <- tree size, decimal, no leading zeros
    Y2l0cnVzIGhhc2ggb2YgdGhlIHRyZWUgcm9vdA==  <- root hash, standard base64 (32 bytes)
    (optional extension lines; we write none)

and the note around it follows c2sp.org/signed-note: the text, a blank line, then one line per signature
``— <key name> <base64(4-byte key ID || signature)>``. Our key name is the origin line. Further signature
lines (witness cosignatures, C2SP tlog-witness) can be appended with :func:`add_signature`; a verifier
ignores lines from keys it does not know, as the spec requires.

Signature types (c2sp.org/signed-note "Signature types"):

- ECDSA P-256 signing keys (the gateway's default) use type ``0x02``, "ECDSA signatures as implemented by
  github.com/transparency-dev/witness": an ASN.1 DER ECDSA signature with SHA-256 over the note text, and
  key ID = the first 4 bytes of SHA-256 of the DER SubjectPublicKeyInfo.
- RSA signing keys (allowed by :mod:`gateway.trust.keys`) have no assigned type; we use the escape byte ``0xff``
  followed by the identifier :data:`RSA_TYPE_ID`: RSASSA-PKCS1-v1_5 with SHA-256 over the note text, key ID
  = first 4 bytes of SHA-256(key name || 0x0A || 0xff || RSA_TYPE_ID || SPKI DER), as the spec recommends.

Nothing personal is in a checkpoint: only the origin, a count and a hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.errors import GatewayError, TrustError
from gateway.messagelog.merkle import HASH_SIZE
from gateway.protocol.signatures import Signer
from gateway.trust import keys

ORIGIN_SUFFIX = "/messagelog"  # checkpoint origin = log origin + this (an injective map: no collisions)
SIG_PREFIX = "\u2014 "  # em dash, space (c2sp.org/signed-note)
TYPE_ECDSA = b"\x02"
TYPE_OTHER = b"\xff"
RSA_TYPE_ID = b"gateway.rsa-pkcs1v15-sha256"
MAX_NOTE_BYTES = 64 * 2**10  # bytes; a checkpoint with 16 post-quantum cosignatures stays far below
MAX_SIGNATURES = 64  # the spec requires accepting at least 16
MAX_EXTENSION_LINES = 16

_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_B64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_CONTROL_RE = re.compile("[\x00-\x09\x0b-\x1f\x7f]")
_SPACE_RE = re.compile(r"\s")


def _bad(message: str) -> TrustError:
    return TrustError(f"checkpoint: {message}")


def checkpoint_origin(log_origin: str) -> str:
    """The checkpoint origin line (and key name) of a message-log origin such as ``DEV/GOV/1001/ss1``."""
    return f"{log_origin}{ORIGIN_SUFFIX}"


def _check_origin(origin: str) -> None:
    if not origin or _SPACE_RE.search(origin) or "+" in origin or _CONTROL_RE.search(origin):
        raise _bad(f"origin {origin[:80]!r} must be non-empty, without spaces, '+' or control characters")


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """The tree head a checkpoint commits to."""

    origin: str  # the checkpoint origin line (log origin + ORIGIN_SUFFIX)
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_origin(self.origin)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size < 2**64:
            raise _bad(f"tree size {self.size!r} is not an unsigned 64-bit integer")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise _bad(f"root hash must be {HASH_SIZE} bytes")
        if len(self.extensions) > MAX_EXTENSION_LINES:
            raise _bad(f"more than {MAX_EXTENSION_LINES} extension lines")
        for line in self.extensions:
            if not line or "\n" in line or _CONTROL_RE.search(line):
                raise _bad("extension lines must be non-empty single lines without control characters")

    def text(self) -> bytes:
        """The note text (c2sp.org/tlog-checkpoint), ending in a newline: what is signed."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode("ascii"), *self.extensions]
        return ("\n".join(lines) + "\n").encode("utf-8")


@dataclass(frozen=True, slots=True, kw_only=True)
class NoteSignature:
    """One signature line of a signed note."""

    key_name: str
    key_id: bytes  # 4 bytes
    signature: bytes

    def line(self) -> bytes:
        blob = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{SIG_PREFIX}{self.key_name} {blob}\n".encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedNote:
    text: bytes  # includes its final newline, not the blank separator line
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> bytes:
        return self.text + b"\n" + b"".join(s.line() for s in self.signatures)


def _spki(public_key: keys.PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key_name: str, cert_or_key: x509.Certificate | keys.PublicKey) -> bytes:
    """The 4-byte signed-note key ID of a signing key (module docstring).

    Raises:
        TrustError: a key type that has no checkpoint signature type here.
    """
    pub = keys.public_key_of(cert_or_key)
    try:
        alg = keys.signature_alg_for(pub)
    except GatewayError as e:
        raise _bad(f"signing key: {e.message}") from e
    if alg == "ecdsa-p256-sha256":
        return hashlib.sha256(_spki(pub)).digest()[:4]
    return hashlib.sha256(key_name.encode() + b"\n" + TYPE_OTHER + RSA_TYPE_ID + _spki(pub)).digest()[:4]


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> bytes:
    """The signed note of ``checkpoint``, with one signature by ``signer`` under the key name = origin.

    Raises:
        TrustError: the signer's key has no checkpoint signature type.
    """
    text = checkpoint.text()
    raw = signer.sign(text)
    # Signer gives RFC 9421 bytes: r || s for ECDSA, which the signed-note ECDSA type carries as DER.
    sig = keys.raw_to_der_ecdsa(raw) if signer.alg == "ecdsa-p256-sha256" else raw
    line = NoteSignature(key_name=checkpoint.origin, key_id=key_id(checkpoint.origin, signer.cert), signature=sig)
    return SignedNote(text=text, signatures=(line,)).encode()


def parse_note(data: bytes) -> SignedNote:
    """Split a signed note into its text and signature lines (c2sp.org/signed-note "Format").

    Raises:
        TrustError: not a well-formed signed note.
    """
    # (1) Size, UTF-8, no control characters but newline.
    if len(data) > MAX_NOTE_BYTES:
        raise _bad(f"note is larger than {MAX_NOTE_BYTES} bytes")
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad("note is not valid UTF-8") from e
    if _CONTROL_RE.search(decoded):
        raise _bad("note contains control characters other than newline")
    if not decoded.endswith("\n"):
        raise _bad("note does not end with a newline")
    # (2) The text ends at the last blank line; what follows are the signature lines.
    cut = decoded.rfind("\n\n")
    if cut < 0:
        raise _bad("note has no blank line before its signatures")
    text, sig_block = decoded[:cut + 1], decoded[cut + 2:]
    lines = sig_block.split("\n")[:-1]
    if not lines:
        raise _bad("note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise _bad(f"note has more than {MAX_SIGNATURES} signatures")
    sigs = []
    for n, line in enumerate(lines, 1):
        if not line.startswith(SIG_PREFIX):
            raise _bad(f"signature line {n} does not start with an em dash and a space")
        parts = line[len(SIG_PREFIX):].split(" ")
        if len(parts) != 2 or not parts[0] or "+" in parts[0] or _SPACE_RE.search(parts[0]):
            raise _bad(f"signature line {n} is not '— <key name> <base64 signature>'")
        name, blob = parts
        if not _B64_RE.fullmatch(blob):
            raise _bad(f"signature line {n} is not standard padded base64")
        try:
            raw = base64.b64decode(blob, validate=True)
        except binascii.Error as e:  # pragma: no cover - the regex refuses what b64decode refuses
            raise _bad(f"signature line {n} is not base64") from e
        if len(raw) < 5:
            raise _bad(f"signature line {n} is shorter than a key ID and a signature")
        sigs.append(NoteSignature(key_name=name, key_id=raw[:4], signature=raw[4:]))
    return SignedNote(text=text.encode("utf-8"), signatures=tuple(sigs))


def parse_checkpoint(text: bytes) -> Checkpoint:
    """Parse a checkpoint's note text (c2sp.org/tlog-checkpoint "Note text").

    Raises:
        TrustError: not a well-formed checkpoint body.
    """
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad("text is not valid UTF-8") from e
    if not decoded.endswith("\n"):
        raise _bad("text does not end with a newline")
    lines = decoded[:-1].split("\n")
    if len(lines) < 3:
        raise _bad("text has fewer than three lines (origin, size, root hash)")
    origin, size, root_b64, *extensions = lines
    if not _SIZE_RE.fullmatch(size):
        raise _bad(f"tree size {size[:40]!r} is not a decimal number without leading zeros")
    if not _B64_RE.fullmatch(root_b64) or len(base64.b64decode(root_b64)) != HASH_SIZE:
        raise _bad("root hash is not the standard base64 of 32 bytes")
    if any(not line for line in extensions):
        raise _bad("extension lines must be non-empty")
    return Checkpoint(origin=origin, size=int(size), root_hash=base64.b64decode(root_b64),
                      extensions=tuple(extensions))


def _verify_one(sig: NoteSignature, text: bytes, pub: keys.PublicKey) -> None:
    alg = keys.signature_alg_for(pub)
    keys.verify_bytes(pub, alg, text, sig.signature)


def verify_checkpoint(
    note: bytes, cert_or_key: x509.Certificate | keys.PublicKey, *, origin: str | None = None,
) -> Checkpoint:
    """Verify a signed checkpoint against the log's signing key; return the checkpoint.

    ``origin`` is the expected checkpoint origin line (see :func:`checkpoint_origin`); the log's key name
    is its origin line.

    Raises:
        TrustError: malformed note or checkpoint, no signature by the key, a failing signature by the key,
            or another origin.
    """
    # (1) A well-formed note.
    signed = parse_note(note)
    # (2) The text is a checkpoint; the key name we look for is its origin line.
    checkpoint = parse_checkpoint(signed.text)
    if origin is not None and checkpoint.origin != origin:
        raise _bad(f"origin {checkpoint.origin!r} is not the expected {origin!r}")
    pub = keys.public_key_of(cert_or_key)
    kid = key_id(checkpoint.origin, pub)
    # (3) Signatures by other keys (witnesses, a rotated key) are ignored; ours must all verify.
    ours = [s for s in signed.signatures if s.key_name == checkpoint.origin and s.key_id == kid]
    if not ours:
        raise _bad(f"no signature by the log key {checkpoint.origin} (key ID {kid.hex()})")
    for sig in ours:
        try:
            _verify_one(sig, signed.text, pub)
        except TrustError as e:
            raise _bad(f"signature by {checkpoint.origin} does not verify ({e.message})") from e
    return checkpoint


def add_signature(note: bytes, signature: NoteSignature) -> bytes:
    """Append a signature line (e.g. a witness cosignature) to a signed note.

    Raises:
        TrustError: ``note`` is not a well-formed signed note, or already has a line from that key.
    """
    signed = parse_note(note)
    if any(s.key_name == signature.key_name and s.key_id == signature.key_id for s in signed.signatures):
        raise _bad(f"note already has a signature by {signature.key_name}")
    return SignedNote(text=signed.text, signatures=(*signed.signatures, signature)).encode()


def signature_lines(note: bytes) -> Sequence[NoteSignature]:
    """The signature lines of a note (for display).

    Raises:
        TrustError: not a well-formed signed note.
    """
    return parse_note(note).signatures


__all__ = [
    "ORIGIN_SUFFIX",
    "Checkpoint",
    "NoteSignature",
    "SignedNote",
    "add_signature",
    "checkpoint_origin",
    "key_id",
    "parse_checkpoint",
    "parse_note",
    "sign_checkpoint",
    "signature_lines",
    "verify_checkpoint",
]
