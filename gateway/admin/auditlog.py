"""The admin audit log as a Merkle log: the entry encoding, its leaf hash, its origin and the chain check (pure).

docs/auditing.md section 7, docs/witness.md section 7. Every audit entry (``adm_audit``) has a sequence number
``seq`` (0, 1, 2, ... with no gap, given out in the writing transaction) and a leaf hash
``SHA-256(0x00 || encode_entry(entry))`` (RFC 9162 section 2.1.1, :func:`gateway.messagelog.merkle.leaf_hash`).
The leaves in ``seq`` order form one append-only Merkle tree per security server, whose checkpoints have the
origin line ``<server id>/audit`` (:data:`gateway.witness.source.AUDIT_SUFFIX`) and are signed, timestamped
and witnessed like the message log's (:mod:`gateway.admin.auditcheckpointer`).

**Encoding, version 1** (fixed: the leaves of existing logs depend on it; a change needs a new version): the
RFC 8785 canonical JSON of the object::

    {"v": 1, "seq": <int>, "at": "<YYYY-MM-DDTHH:MM:SS.ffffffZ>", "actor": ..., "auth": ..., "remote": ...,
     "action": ..., "method": ..., "path": ..., "result": ..., "status": <int>, "details": "<stored text>"}

``details`` is the stored JSON text itself (a string), so the leaf covers exactly the bytes the database
holds. ``seq`` in the entry binds it to its place in the tree: an entry moved elsewhere no longer hashes to
the leaf there.

:func:`check_chain` is the check that both ``gateway admin audit verify`` (online) and the archive verifier
(offline, :mod:`gateway.admin.auditverify`) make: sequence numbers without gap or duplicate, each entry's
leaf recomputed and compared with the stored one, and the stored leaves against the roots of checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.errors import GatewayError, TrustError
from gateway.identifiers import SecurityServerId
from gateway.messagelog.merkle import MerkleTree, leaf_hash
from gateway.trust.canonical import canonical_bytes
from gateway.witness.source import AUDIT_SUFFIX

ENCODING_VERSION = 1


def audit_origin(server_id: SecurityServerId) -> str:
    """The checkpoint origin line of the audit log of ``server_id``: ``<server id>/audit``."""
    return f"{server_id}{AUDIT_SUFFIX}"


def parse_audit_origin(origin: str) -> SecurityServerId:
    """The security server whose audit log ``origin`` (a checkpoint origin line) is.

    Raises:
        TrustError: not ``<server id>/audit``.
    """
    if not origin.endswith(AUDIT_SUFFIX):
        raise TrustError(f"origin {origin[:120]!r} is not an audit log origin (<server id>{AUDIT_SUFFIX})")
    try:
        return SecurityServerId.parse(origin.removesuffix(AUDIT_SUFFIX), encoded=False)  # str() form, as written
    except GatewayError as e:
        raise TrustError(f"origin {origin[:120]!r} does not name a security server: {e.message}") from e


def format_at(t: datetime) -> str:
    """The entry time as encoded: UTC, microseconds, ``Z``."""
    if t.utcoffset() is None:
        raise ValueError("audit entry time must be an aware datetime")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryFields:
    """An audit entry as the tree sees it: its sequence number and the stored column values."""

    seq: int
    at: datetime
    actor: str
    auth: str
    remote: str
    action: str
    method: str
    path: str
    result: str
    status: int
    details: str  # the stored JSON text


def encode_entry(e: EntryFields) -> bytes:
    """The canonical encoding, version 1 (module docstring). Never changes: migrations use it too."""
    return canonical_bytes({
        "v": ENCODING_VERSION, "seq": e.seq, "at": format_at(e.at), "actor": e.actor, "auth": e.auth,
        "remote": e.remote, "action": e.action, "method": e.method, "path": e.path, "result": e.result,
        "status": e.status, "details": e.details,
    })


def entry_leaf(e: EntryFields) -> bytes:
    """The entry's leaf hash: ``SHA-256(0x00 || encode_entry(e))``."""
    return leaf_hash(encode_entry(e))


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainProblem:
    """One thing in the audit log that does not verify: which entry (or range), and what."""

    where: str  # "entry 17", "entries 10..19", "checkpoint 20"
    problem: str  # gap, duplicate, altered, rewritten, beyond
    message: str
    seq: int | None = None

    def line(self) -> str:
        return f"FAIL {self.where}: {self.problem}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class HeadRef:
    """A checkpoint's size and root hash (already verified, or as stored for the online check)."""

    size: int
    root_hash: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainResult:
    size: int  # entries read
    problems: tuple[ChainProblem, ...]
    reproduced: tuple[int, ...]  # sizes of the checkpoints whose root the stored leaves reproduce


def check_chain(entries: Iterable[tuple[int, bytes, bytes]], heads: Sequence[HeadRef]) -> ChainResult:
    """Check the audit log: ``entries`` are ``(seq, recomputed leaf, stored leaf)`` in ``seq`` order (the
    recomputed leaf from the entry's columns or exported bytes, the stored one as kept with the row), and
    ``heads`` the checkpoints.

    (1) ``seq`` runs 0, 1, 2, ... without gap or duplicate.
    (2) Each recomputed leaf equals the stored leaf, else the entry was changed after it was written.
    (3) The stored leaves (the recomputed ones where a stored one is missing) reproduce each checkpoint's
        root; a checkpoint whose root they do not reproduce means entries inside it were changed together
        with their stored leaves, or removed: the range since the last reproduced checkpoint is named.
    (4) A checkpoint beyond the last entry means entries at the end were removed.
    """
    problems: list[ChainProblem] = []
    tree = MerkleTree()
    pending = sorted(heads, key=lambda h: h.size)
    i = 0
    last_good = 0
    expect = 0
    reproduced: list[int] = []

    def check_heads() -> None:
        nonlocal i, last_good
        while i < len(pending) and pending[i].size == tree.size:
            head = pending[i]
            if tree.root() == head.root_hash:
                last_good = head.size
                reproduced.append(head.size)
            else:
                problems.append(ChainProblem(
                    where=f"entries {last_good}..{head.size - 1}", problem="rewritten",
                    message=f"the entries do not reproduce the root of checkpoint {head.size}: an entry in this "
                            "range was changed together with its stored leaf hash, removed or inserted",
                ))
            i += 1

    check_heads()
    for seq, recomputed, stored in entries:
        # (1) no gap, no duplicate
        if seq != expect:
            kind = "duplicate" if seq < expect else "gap"
            problems.append(ChainProblem(
                where=f"entry {seq}", problem=kind, seq=seq,
                message=f"sequence number {seq} where {expect} was due"
                        + (" (entries were removed)" if kind == "gap" else " (an entry was inserted twice)"),
            ))
            if seq < expect:
                continue
            expect = seq
        # (2) the entry as it is now against the leaf it had when it was written
        if recomputed != stored:
            problems.append(ChainProblem(
                where=f"entry {seq}", problem="altered", seq=seq,
                message="its content does not hash to the leaf stored when it was written: the entry was changed",
            ))
        tree.append(stored)
        expect += 1
        # (3) checkpoints at this size
        check_heads()
    # (4) checkpoints beyond the end
    for head in pending[i:]:
        problems.append(ChainProblem(
            where=f"checkpoint {head.size}", problem="beyond",
            message=f"the log has {tree.size} entries but a checkpoint covers {head.size}: entries at the end "
                    "were removed",
        ))
    return ChainResult(size=tree.size, problems=tuple(problems), reproduced=tuple(reproduced))


__all__ = [
    "ENCODING_VERSION",
    "ChainProblem",
    "ChainResult",
    "EntryFields",
    "HeadRef",
    "audit_origin",
    "check_chain",
    "encode_entry",
    "entry_leaf",
    "format_at",
    "parse_audit_origin",
]
