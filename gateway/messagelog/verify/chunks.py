"""Running step 3 of the archive verification: one chunk's records checked (pure, but for the archive members
that a :class:`~gateway.messagelog.archive.ChunkSpan` reads).

:func:`check_chunk` checks each line of a records member (the lean check first, then its ECDSA signatures one
after the other, then the general check for what the lean one did not accept) and computes the leaf hashes
and subtree roots; :func:`serial_runner` runs it over the chunks of an archive in this process, and
:class:`gateway.messagelog.verify.parallel.ProcessPoolRunner` in worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from gateway.errors import TrustError
from gateway.globalconf.anchor import Anchor
from gateway.messagelog.archive import Chunk, ChunkSpan
from gateway.messagelog.merkle import leaf_hash
from gateway.messagelog.verify import large
from gateway.messagelog.verify.large import LARGE_MEMBER_BYTES
from gateway.messagelog.verify.lean import LeanChecker, P256Check, _ecdsa_p256_ok
from gateway.messagelog.verify.records import Checked, _RecordProblem
from gateway.messagelog.verify.report import ChunkResult, RecordFinding
from gateway.messagelog.verify.tree import _subtree_roots
from gateway.messagelog.verify.trustset import load_trust


def check_chunk(checker: LeanChecker, first: int, data: bytes) -> ChunkResult:
    """Step 3 for one records member: each line checked, its leaf hash computed (and the roots of the
    subtrees that they make, for step 5).

    The lean check (:meth:`LeanChecker.lean`) of every line comes first, then the ECDSA signatures it
    leaves, one after the other, then, in line order, the general check of each line that the lean check did
    not accept or whose signature does not verify.
    """
    leaves = bytearray()
    lean = checker.lean
    # per line: its view, and what the lean check made of it (None: not accepted)
    prepared: list[tuple[memoryview, tuple[Checked, P256Check | None] | None]] = []
    # the lines as views of the member's bytes: data.split(b"\n") without the empty one after a final line feed,
    # but with no copy of each line
    view = memoryview(data)
    size = len(data)
    pos = 0
    while pos < size:
        end = data.find(b"\n", pos)
        if end < 0:
            end = size
        line = view[pos:end]
        pos = end + 1
        # (3e) the leaf hash, whatever the record's state
        leaves += leaf_hash(line)
        prepared.append((line, lean(line)))
    # the signatures, one after the other: whether the lean check accepts each line
    accepted = [p is not None and (p[1] is None or _ecdsa_p256_ok(p[1])) for _, p in prepared]
    findings: list[RecordFinding] = []
    requests: list[tuple[int, str, bytes]] = []
    responses: list[tuple[int, str, bytes]] = []
    pairs: set[tuple[bytes, bytes]] = set()
    lo: datetime | None = None
    hi: datetime | None = None
    valid = 0
    for i, ((line, lean_result), ok) in enumerate(zip(prepared, accepted, strict=True)):
        if ok and lean_result is not None:
            checked = lean_result[0]
        else:  # not in the usual form, or not valid: the general check decides and explains
            try:
                checked = checker.check(line.tobytes())
            except _RecordProblem as e:
                findings.append(RecordFinding(line=i, problem=e.problem, message=e.message))
                continue
        valid += 1
        created = checked.created
        lo = created if lo is None or created < lo else lo
        hi = created if hi is None or created > hi else hi
        pairs.add(checked.pair)
        if checked.kind == "request":
            requests.append((i, checked.request_id, checked.signature))
        elif checked.kind == "usage":  # no signature to pair (docs/transparency.md section 3)
            continue
        else:
            assert checked.bound is not None
            responses.append((i, checked.request_id, checked.bound))
    leaf_hashes = bytes(leaves)
    return ChunkResult(
        first=first, lines=len(prepared), leaves=leaf_hashes, valid=valid, findings=tuple(findings),
        requests=tuple(requests), responses=tuple(responses), pairs=frozenset(pairs), first_created=lo,
        last_created=hi, roots=_subtree_roots(first, leaf_hashes),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckContext:
    """What a worker needs to build its :class:`~gateway.messagelog.verify.lean.LeanChecker` (picklable)."""

    anchor: bytes
    envelopes: tuple[bytes, ...]
    origin: str
    blobs: tuple[tuple[str, bytes], ...] = ()  # the archive's certs/ and ocsp/ members: (name's hex, bytes)

    def checker(self) -> LeanChecker:
        trust, _ = load_trust(Anchor.from_bytes(self.anchor), self.envelopes)
        if trust is None:
            raise TrustError("no global configuration verifies against the anchor")
        return LeanChecker(trust, self.origin, self.blobs)


ChunkData = bytes | ChunkSpan  # a records member's bytes, or where a worker process reads them
ChunkRunner = Callable[[CheckContext, Iterable[tuple[Chunk, ChunkData]]], Iterator[ChunkResult]]


def _data(data: ChunkData) -> bytes:
    return data.read() if isinstance(data, ChunkSpan) else data


def check_data(checker: LeanChecker, first: int, data: ChunkData) -> ChunkResult:
    """:func:`check_chunk` of a member given by its bytes or its place in the file; a place holding one large
    record (a body the log stored apart) is read piece by piece
    (:func:`~gateway.messagelog.verify.large.read_large_record`)."""
    if isinstance(data, ChunkSpan) and data.size > LARGE_MEMBER_BYTES:
        record = large.read_large_record(data)
        if record is not None:
            return large.complete(check_chunk(checker, first, record.bare), record)
    return check_chunk(checker, first, _data(data))


def serial_runner(context: CheckContext, chunks: Iterable[tuple[Chunk, ChunkData]]) -> Iterator[ChunkResult]:
    """Check the chunks one after the other in this process."""
    checker = context.checker()
    for chunk, data in chunks:
        yield check_data(checker, chunk.first, data)


serial_runner.reads_files = True  # type: ignore[attr-defined]  # verify_archive sends ChunkSpans where it can


__all__ = ["CheckContext", "ChunkData", "ChunkRunner", "check_chunk", "check_data", "serial_runner"]
