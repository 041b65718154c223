"""The witness's decision on one ``add-checkpoint`` request (c2sp.org/tlog-witness@v1.0.0) (pure).

docs/witness.md section 1. Bytes, frozen values and ``now`` in; a :class:`Cosigned` (the cosignature and the
state to persist before answering) or a :class:`Refused` (status, message, and evidence of a fork) out. The
I/O shell (:mod:`gateway.witness.http`) reads the stored state, asks :func:`decide`, persists atomically and
answers.

The request body (c2sp.org/tlog-witness "add-checkpoint")::

    old <size>\\n               the size the pusher believes we last cosigned for the origin (0: none)
    <base64 hash>\\n ...        the RFC 6962 consistency proof from old to the checkpoint's size (<= 63 lines)
    \\n
    <signed checkpoint note>   c2sp.org/tlog-checkpoint@v1.0.0 in c2sp.org/signed-note@v1.0.0

Statuses (the spec's, with our reasons):

======  ==========================================================================================================
status  when
======  ==========================================================================================================
200     cosigned: the body is one cosignature line (c2sp.org/tlog-cosignature@v1.0.1, type 0x04)
400     malformed body, or old size larger than the checkpoint's size
403     the origin is not the calling server's own log; no or an untrusted ``X-Gateway-Log-Certificate``; the
        log's signature is missing or does not verify
404     the origin is not a log this witness witnesses (no log origin, or no witness policy naming this witness)
409     old size is not the size we know (body ``<size>\\n``, ``Content-Type: text/x.tlog.size``)
413     the body is larger than the limit (checked by the shell while reading)
422     a proof given with old size 0; same size but another root (a fork); a consistency proof that fails
======  ==========================================================================================================

The log's key: our checkpoints are signed by the logging server's member signing certificate (ECDSA,
signed-note type 0x02, :mod:`gateway.messagelog.checkpoint`), which the note does not carry. The pusher sends
its DER, base64, in the request header :data:`CERT_HEADER` (an extension beyond C2SP).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.errors import GatewayError, IdentifierError, PayloadTooLarge, PeerError, RequestError, TrustError
from gateway.globalconf import peertrust
from gateway.globalconf.model import GlobalConf
from gateway.identifiers import SecurityServerId
from gateway.messagelog import merkle
from gateway.messagelog.checkpoint import (
    ORIGIN_SUFFIX,
    Checkpoint,
    parse_checkpoint,
    parse_note,
    verify_checkpoint,
)
from gateway.messagelog.origins import parse_origin
from gateway.trust import certprofile
from gateway.trust.cosignature import Cosignature, WitnessKey, cosign
from gateway.witness.source import AUDIT_SUFFIX

PREFIX = "/witness"  # the witness prefix on the server-to-server port (policy URLs end with it)
ADD_CHECKPOINT = f"{PREFIX}/add-checkpoint"
CERT_HEADER = "X-Gateway-Log-Certificate"  # base64 DER of the log's signing certificate (our extension)
SIZE_CONTENT_TYPE = "text/x.tlog.size"  # the 409 body's media type (c2sp.org/tlog-witness)
MAX_REQUEST_BYTES = 64 * 2**10  # bytes; 63 proof lines and a checkpoint note with 64 signatures stay far below
MAX_PROOF_LINES = 63  # c2sp.org/tlog-witness: a consistency proof has at most 63 hashes
MAX_CERT_HEADER_CHARS = 16 * 2**10  # characters of base64; a signing certificate is 1-2 KiB

_OLD_RE = re.compile(r"old (0|[1-9][0-9]{0,19})")
_HASH_RE = re.compile(r"[A-Za-z0-9+/]{43}=")  # standard base64 of 32 bytes
_SIZE_BODY_RE = re.compile(rb"(0|[1-9][0-9]{0,19})\n")

Reason = Literal["fork", "inconsistent"]


# ---- values -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AddCheckpoint:
    """A parsed ``add-checkpoint`` body (the note's signatures are not yet checked)."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes = field(repr=False)  # the signed note exactly as received
    text: bytes = field(repr=False)  # its text (what is cosigned: the bytes received, never re-serialised)
    checkpoint: Checkpoint  # parsed from the note's text

    @property
    def origin(self) -> str:
        return self.checkpoint.origin


@dataclass(frozen=True, slots=True, kw_only=True)
class LogState:
    """What the witness keeps per origin: the checkpoint it last cosigned (the largest consistent one)."""

    origin: str
    size: int
    root_hash: bytes
    note: bytes = field(repr=False)  # the signed note as it was cosigned (the log's signature, no cosignatures)
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """A refused request that shows a fork or an inconsistent history: two notes signed by the log."""

    origin: str
    recorded_at: datetime
    reason: Reason
    message: str
    peer: str  # the security server that sent it
    old_size: int
    note: bytes = field(repr=False)  # the submitted signed note
    proof: tuple[bytes, ...] = field(repr=False)
    stored_note: bytes = field(repr=False)  # the signed note we had cosigned


@dataclass(frozen=True, slots=True, kw_only=True)
class Cosigned:
    """Cosign: persist ``state`` (atomically, against the state the decision saw), then answer 200."""

    state: LogState
    cosignature: Cosignature
    status: int = 200

    def body(self) -> bytes:
        return self.cosignature.line()


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """Refuse with ``status``; keep ``evidence`` when there is some."""

    status: int
    message: str
    known_size: int | None = None  # 409: the size we know
    evidence: Evidence | None = None

    def body(self) -> bytes:
        if self.status == 409:
            return f"{self.known_size}\n".encode("ascii")
        return f"{self.message}\n".encode()

    @property
    def content_type(self) -> str:
        return SIZE_CONTENT_TYPE if self.status == 409 else "text/plain; charset=utf-8"


Decision = Cosigned | Refused


class WitnessSigner(Protocol):
    """The witness key in the token (:mod:`gateway.witness.signer`): its public half, and cosigning."""

    @property
    def key(self) -> WitnessKey: ...

    def cosign(self, note_text: bytes, timestamp: int) -> Cosignature: ...


@dataclass(frozen=True, slots=True)
class KeyWitnessSigner:
    """A :class:`WitnessSigner` over an Ed25519 private key held in memory (the software token's, a test's)."""

    name: str
    private_key: ed25519.Ed25519PrivateKey = field(repr=False)

    @property
    def key(self) -> WitnessKey:
        return WitnessKey.of_private_key(self.name, self.private_key)

    def cosign(self, note_text: bytes, timestamp: int) -> Cosignature:
        return cosign(note_text, self.name, self.private_key, timestamp)


# ---- parsing ------------------------------------------------------------------------------------------------


def parse_request(body: bytes, *, max_bytes: int = MAX_REQUEST_BYTES) -> AddCheckpoint:
    """Parse an ``add-checkpoint`` body (module docstring).

    Raises:
        PayloadTooLarge: more than ``max_bytes``.
        RequestError: not ``old N``, proof lines that are not base64 hashes or more than 63 of them, no blank
            line, or a note that is not a well-formed signed checkpoint.
    """
    # (1) Bounded, UTF-8.
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"add-checkpoint body of {len(body)} bytes is larger than {max_bytes} bytes")
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise RequestError("add-checkpoint body has no blank line between the proof and the checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError as e:
        raise RequestError("add-checkpoint old size and proof lines must be ASCII") from e
    # (2) The old size: decimal, no leading zeros.
    m = _OLD_RE.fullmatch(lines[0])
    if m is None or int(m.group(1)) >= 2**64:
        raise RequestError(f"add-checkpoint body must start with 'old <size>', not {lines[0][:60]!r}")
    # (3) The proof: at most 63 lines, each the standard base64 of a 32-byte hash.
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise RequestError(f"add-checkpoint proof has {len(proof_lines)} lines, more than {MAX_PROOF_LINES}")
    proof = []
    for n, line in enumerate(proof_lines, 1):
        if not _HASH_RE.fullmatch(line):
            raise RequestError(f"add-checkpoint proof line {n} is not the standard base64 of a 32-byte hash")
        proof.append(base64.b64decode(line))
    # (4) The note: a signed note whose text is a checkpoint (its signatures are checked by decide()).
    try:
        text = parse_note(note).text
        checkpoint = parse_checkpoint(text)
    except TrustError as e:
        raise RequestError(f"add-checkpoint {e.message}") from e
    return AddCheckpoint(old_size=int(m.group(1)), proof=tuple(proof), note=note, text=text, checkpoint=checkpoint)


def encode_request(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    """The ``add-checkpoint`` body a pusher sends (module docstring); :func:`parse_request` reads it back."""
    lines = [f"old {old_size}", *(base64.b64encode(h).decode("ascii") for h in proof)]
    return ("\n".join(lines) + "\n\n").encode("ascii") + note


def parse_known_size(body: bytes) -> int:
    """The size in a 409 answer's ``text/x.tlog.size`` body (``<size>\n``), for a pusher.

    Raises:
        PeerError: not a decimal size and a newline.
    """
    m = _SIZE_BODY_RE.fullmatch(body)
    if m is None:
        raise PeerError(f"witness answered 409 with {body[:40]!r}, not '<size>\\n' (text/x.tlog.size)")
    return int(m.group(1))


def logging_server(origin: str) -> SecurityServerId | None:
    """The security server whose log a checkpoint origin names, or None if it follows neither naming scheme.

    ``<log origin>/messagelog`` (:mod:`gateway.messagelog.origins`) or ``<server id>/audit``.
    """
    try:
        if origin.endswith(ORIGIN_SUFFIX):
            return parse_origin(origin.removesuffix(ORIGIN_SUFFIX)).server
        if origin.endswith(AUDIT_SUFFIX):
            return SecurityServerId.parse(origin.removesuffix(AUDIT_SUFFIX), encoded=False)
    except (TrustError, IdentifierError):
        return None
    return None


def _log_certificate(header: str | None, conf: GlobalConf, server: SecurityServerId, now: datetime,
                     ) -> x509.Certificate:
    """The log's signing certificate from :data:`CERT_HEADER`, checked (step 4 of :func:`decide`).

    Raises:
        TrustError: missing, not base64 DER, not issued by a CA of the configuration, not valid now, or not a
            signing certificate of the logging server's owner.
    """
    if header is None:
        raise TrustError(f"this witness needs the log's signing certificate in the {CERT_HEADER} header (base64 "
                         "DER; an extension beyond c2sp.org/tlog-witness@v1.0.0, docs/witness.md)")
    if len(header) > MAX_CERT_HEADER_CHARS:
        raise TrustError(f"{CERT_HEADER} is longer than {MAX_CERT_HEADER_CHARS} characters")
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(header.strip(), validate=True))
    except (binascii.Error, ValueError) as e:
        raise TrustError(f"{CERT_HEADER} is not the base64 of a DER certificate") from e
    peertrust.check_chain(cert, conf, now=now, fault=TrustError)
    member = certprofile.sign_identity_of(cert)
    if member != server.owner:
        raise TrustError(f"the log certificate names {member}, not {server.owner}, the owner of {server}")
    return cert


# ---- the decision -------------------------------------------------------------------------------------------


def decide(
    request: AddCheckpoint,
    *,
    peer: SecurityServerId,
    cert_header: str | None,
    conf: GlobalConf,
    signer: WitnessSigner,
    stored: LogState | None,
    now: datetime,
) -> Decision:
    """Cosign ``request`` or refuse it, given the state stored for its origin (module docstring).

    ``peer`` is the security server the TLS client certificate authenticated; ``stored`` the state read for
    ``request.origin`` (None: never cosigned). The caller persists :attr:`Cosigned.state` only if the stored
    state is still ``stored`` (compare and set), and asks again otherwise.
    """
    origin = request.origin
    ours = signer.key
    # (1) The old size cannot be beyond the checkpoint.
    if request.old_size > request.checkpoint.size:
        return Refused(status=400, message=f"old size {request.old_size} is larger than the checkpoint's size "
                                           f"{request.checkpoint.size}")
    # (2) A log this witness witnesses: the origin names a security server whose witness policy names our key.
    server = logging_server(origin)
    if server is None:
        return Refused(status=404, message=f"origin {origin[:120]!r} is not a message log or audit log origin")
    policy = conf.witness_policy(server)
    if policy is None or not any(w.key == ours for w in policy.witnesses):
        return Refused(status=404, message=f"origin {origin[:120]} is not witnessed by {ours.name}: the global "
                                           f"configuration has no witness policy for {server} naming this witness")
    # (3) Only the logging server itself pushes its checkpoints.
    if peer != server:
        return Refused(status=403, message=f"origin {origin[:120]} is a log of {server}, not of the calling "
                                           f"server {peer}")
    # (4) The log's key: a signing certificate of the server's owner, issued by a CA of the configuration.
    # (5) The log's signature on the note verifies with it.
    try:
        cert = _log_certificate(cert_header, conf, server, now)
        verify_checkpoint(request.note, cert, origin=origin)
    except GatewayError as e:
        return Refused(status=403, message=e.message)
    # (6) The old size must be the size we know (0 for an origin never cosigned).
    known = 0 if stored is None else stored.size
    if request.old_size != known:
        return Refused(status=409, message=f"old size {request.old_size} is not {known}, the size this witness "
                                           f"knows for {origin[:120]}", known_size=known)
    new = request.checkpoint

    def evidence(reason: Reason, message: str) -> Refused:
        assert stored is not None
        return Refused(status=422, message=message, evidence=Evidence(
            origin=origin, recorded_at=now, reason=reason, message=message, peer=str(peer),
            old_size=request.old_size, note=request.note, proof=request.proof, stored_note=stored.note,
        ))

    # (7) From the empty tree, nothing to prove.
    if request.old_size == 0 and request.proof:
        return Refused(status=422, message="a consistency proof from old size 0 must be empty")
    if stored is not None:
        # (8) The same size: the same root, or the log has signed two histories (a fork).
        if stored.size == new.size:
            if request.proof:
                return Refused(status=422, message="a consistency proof between equal sizes must be empty")
            if stored.root_hash != new.root_hash:
                return evidence("fork", f"{origin[:120]} at size {new.size} has another root hash than the "
                                        "checkpoint this witness cosigned: the log shows two histories")
        # (9) A larger size: the proof must lead from the root we cosigned to the new root.
        else:
            try:
                merkle.verify_consistency(stored.size, new.size, stored.root_hash, new.root_hash, request.proof)
            except TrustError as e:
                return evidence("inconsistent", f"{origin[:120]} {stored.size} -> {new.size}: {e.message}")
    # (10) Cosign at now; the new state is this checkpoint.
    timestamp = int(now.timestamp())
    state = LogState(origin=origin, size=new.size, root_hash=new.root_hash, note=request.note, updated_at=now)
    return Cosigned(state=state, cosignature=signer.cosign(request.text, timestamp))


__all__ = [
    "ADD_CHECKPOINT",
    "CERT_HEADER",
    "MAX_PROOF_LINES",
    "MAX_REQUEST_BYTES",
    "PREFIX",
    "SIZE_CONTENT_TYPE",
    "AddCheckpoint",
    "Cosigned",
    "Decision",
    "Evidence",
    "KeyWitnessSigner",
    "LogState",
    "Refused",
    "WitnessSigner",
    "decide",
    "encode_request",
    "logging_server",
    "parse_known_size",
    "parse_request",
]
