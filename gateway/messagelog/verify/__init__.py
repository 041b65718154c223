"""Offline verification of a message-log archive, trusting nothing but the anchor (pure).

docs/messagelog.md, ``docs/auditing.md``. :func:`verify_archive` takes an archive's contents (any
:class:`ArchiveSource`: the ZIP reader of :mod:`gateway.messagelog.archive`, or memory) and the instance's
:class:`~gateway.globalconf.anchor.Anchor`, and returns a :class:`VerifyReport`: a list of precise
:class:`Finding` objects (which record, which checkpoint, what is wrong), empty when everything verifies.
It never stops at the first problem: an auditor wants to know every record that is wrong.

The steps, as numbered in the code:

1. Global configurations: every envelope in the archive must verify against the anchor (signature by an
   anchored key, known format, the anchor's instance; expiry is not checked, these are historical
   documents). They name the trusted CAs (with their OCSP policy) and TSAs. For a moment ``t`` the
   configuration in force (``issued_at <= t < expires_at``) is used; if the archive holds none for ``t``,
   the newest one is (as X-Road's ``asicverifier`` uses the current configuration).
2. Checkpoints: each signed note parses, names this log's origin, carries an RFC 3161 timestamp token over
   SHA-256 of the note bytes by a TSA of the configuration, and is signed by a signing key of the member that
   owns the log (a certificate in the archive or stapled in its records, with a key ID that the note names),
   whose certificate chains to a trusted CA, names that member and has a good OCSP status at the timestamp.
3. Records, chunk by chunk (in parallel with :class:`ProcessPoolRunner`), each independently:
   a. the bytes are a version-2 record in canonical form (``docs/messagelog.md`` section 2) of this origin,
      and the archive holds the blobs it names (its certificate and OCSP response), intact: a ``certs/`` or
      ``ocsp/`` member whose bytes do not hash to its name is reported once, and each record that names it;
   b. the RFC 9421 signature base, rebuilt from its template, holds exactly the record's identifiers, method,
      target, status, digest, certificate and OCSP response, and the signature verifies with the stapled
      certificate;
   c. the certificate chains to a CA trusted by the configuration in force at the message's ``created``
      time, names the member that must sign (the client's for a request, the provider's for a response),
      is valid then, and its stapled OCSP response is good and fresh as of then;
   d. the logged body, if kept, matches the signed ``Content-Digest``;
   e. its leaf hash ``SHA-256(0x00 || record)`` is computed.
   Each distinct certificate and OCSP response is checked once per configuration and validity window.
   :meth:`LeanChecker.check_lean` makes 3a-3d for records in the form the proxies write with a few string
   operations and caches keyed by exact text (no JSON parse, no general RFC 9421 re-parse, the signature base
   compared with the text that the cached ``Signature-Input`` and the record's values make, most of it in
   base64 without decoding); a record it does not accept goes to :meth:`RecordChecker.check`, the general
   check, which decides and explains. The lean check never accepts what the general one refuses
   (``tests/unit/test_record_checkers.py`` runs one table of records through both checkers;
   ``tests/unit/test_archive_lean.py``, ``tests/unit/test_verify_lean.py``).
4. Order and completeness: the records' leaf hashes are compared with ``leaves.bin`` (the leaf hashes as
   stored by the log). Once ``leaves.bin`` reproduces a verified checkpoint's root it is authenticated, so a
   difference names the record precisely: altered, missing, inserted, duplicated or out of place.
5. Tree: for each verified checkpoint of a size inside the archive's range, the records (after the
   compact-range prefix of the records before the range) must reproduce its root hash. The tree is built as
   the chunks' results arrive, from the roots of the perfect subtrees that each chunk's leaves make (computed
   by the worker that checked it) where the chunk is where the manifest puts it, else leaf by leaf.
6. Binding: every response record must be bound (``"signature";req``) to the signature of the request
   record of the same ``request_id``, when that request is in the archive.
7. Coverage: every record must lie inside a verified checkpoint; records after the last one are unproven.
8. Witnesses: each verified checkpoint's cosignatures are checked against the witness policy of the
   configuration in force, and the policy's quorum (or the auditor's, ``witness_quorum``) is required
   (:mod:`~gateway.messagelog.verify.witnesses`; docs/witness.md section 5). The report keeps the archive's
   :class:`~gateway.messagelog.verify.splitview.TreeEvidence`, which
   :func:`~gateway.messagelog.verify.splitview.find_split_views` compares with another archive's.

The modules of this package follow the steps: :mod:`~gateway.messagelog.verify.trustset` (1),
:mod:`~gateway.messagelog.verify.checkpoints` (2), :mod:`~gateway.messagelog.verify.records` (3, the general
check) and :mod:`~gateway.messagelog.verify.lean` (3, the lean check), :mod:`~gateway.messagelog.verify.chunks`
(3 for one records member, and the runner in this process), :mod:`~gateway.messagelog.verify.parallel` (3 in
worker processes),
:mod:`~gateway.messagelog.verify.tree` (4 and 5), :mod:`~gateway.messagelog.verify.report` (what is reported);
:func:`verify_archive`, here, runs them all and makes steps 6 and 7.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from gateway.errors import GatewayError, TrustError
from gateway.globalconf.anchor import Anchor
from gateway.messagelog import checkpoint as cp
from gateway.messagelog.archive import CheckpointData, Chunk, Manifest
from gateway.messagelog.merkle import HASH_SIZE, MerkleTree
from gateway.messagelog.origins import parse_origin
from gateway.messagelog.verify.checkpoints import VerifiedCheckpoint, verify_checkpoints
from gateway.messagelog.verify.chunks import (
    CheckContext,
    ChunkData,
    ChunkRunner,
    check_chunk,
    serial_runner,
)
from gateway.messagelog.verify.lean import LeanChecker, LeanInput, lean_input, split_record
from gateway.messagelog.verify.parallel import ProcessPoolRunner, runner_for, usable_cpus
from gateway.messagelog.verify.records import RECORD_FIELDS, Checked, RecordChecker
from gateway.messagelog.verify.report import ChunkResult, Finding, RecordFinding, Severity, VerifyReport
from gateway.messagelog.verify.splitview import EvidenceCheckpoint, SplitView, TreeEvidence, find_split_views
from gateway.messagelog.verify.tree import _extend_tree, _roots_at, compare_with_index
from gateway.messagelog.verify.trustset import TrustSet, load_trust
from gateway.messagelog.verify.witnesses import WitnessSummary, check_witnesses


class ArchiveSource(Protocol):
    """What the verifier reads: :class:`gateway.messagelog.archive.LogArchive` or an in-memory double."""

    @property
    def manifest(self) -> Manifest: ...
    @property
    def leaves(self) -> bytes: ...
    @property
    def checkpoints(self) -> Sequence[CheckpointData]: ...
    @property
    def globalconfs(self) -> Sequence[bytes]: ...
    @property
    def certificates(self) -> Sequence[bytes]: ...
    @property
    def ocsp_responses(self) -> Sequence[bytes]: ...

    def read_chunk(self, chunk: Chunk) -> bytes: ...


def verify_archive(
    source: ArchiveSource, anchor: Anchor, *, runner: ChunkRunner = serial_runner,
    progress: Callable[[int, int], None] | None = None, witness_quorum: int | None = None, name: str = "",
) -> VerifyReport:
    """Verify an archive against ``anchor``; the report lists every problem (module docstring steps).

    ``witness_quorum`` replaces the witness policy's quorum (step 8); ``name`` is how split-view evidence names
    this archive.

    Never raises for a bad archive: every problem is a :class:`Finding`.
    """
    archive_name = name  # (the blob loop below reuses `name`)
    m = source.manifest
    report = VerifyReport(origin=m.origin, start=m.start, end=m.end, checkpoints=len(source.checkpoints))
    add = report.findings.append
    # (1) the global configurations that the anchor vouches for
    trust, conf_findings = load_trust(anchor, source.globalconfs, m.globalconf)
    report.findings.extend(conf_findings)
    if trust is None:
        return report
    report.configurations = tuple(c.version for c in trust.confs)
    # (3a) the blobs: each certs/ or ocsp/ member must hash to its name
    blobs = tuple((n.split("/", 1)[1][:-4], d) for n, d in zip(
        (*m.certificates, *m.ocsp_responses), (*source.certificates, *source.ocsp_responses), strict=True))
    for (name, data), member in zip(blobs, (*m.certificates, *m.ocsp_responses), strict=True):
        if hashlib.sha256(data).hexdigest() != name:
            add(Finding(where="archive", problem="blob",
                        message=f"member {member}: its bytes do not hash to its name (altered)"))
    # (3) the records, chunk by chunk (before the checkpoints: their stapled certificates serve step 2)
    context = CheckContext(anchor=anchor.to_bytes(), envelopes=tuple(source.globalconfs), origin=m.origin,
                           blobs=blobs)
    total = m.end - m.start
    results: list[ChunkResult] = []

    span_of = getattr(source, "chunk_span", None) if getattr(runner, "reads_files", False) else None

    def chunks() -> Iterator[tuple[Chunk, ChunkData]]:
        for chunk in m.chunks:
            yield chunk, (span_of(chunk) if span_of is not None else source.read_chunk(chunk))

    # (5, as the results come) the tree over the records, with its root at each size that a checkpoint names
    wanted = set()
    for entry in source.checkpoints:
        try:
            wanted.add(cp.parse_checkpoint(cp.parse_note(entry.note).text).size)
        except (TrustError, UnicodeDecodeError):
            continue
    tree = MerkleTree(size=m.start, frontier=list(m.prefix))
    roots_actual: dict[int, bytes] = {m.start: tree.root()} if m.start in wanted else {}
    early: tuple[list[VerifiedCheckpoint], list[Finding]] | None = None
    for result in runner(context, chunks()):
        results.append(result)
        _extend_tree(tree, result, wanted, roots_actual)
        report.records_read += result.lines
        if progress is not None:
            progress(min(report.records_read, total), total)
        if early is None:
            # (2, while the workers go on) the checkpoints with the certificates and OCSP responses of the
            # archive alone: where every one verifies so, the records' stapled ones change nothing (they
            # come after those of the archive in verify_checkpoints' search, which stops at the first that
            # serves), so the result stands; else step 2 is made again below with them
            early = verify_checkpoints(
                source.checkpoints, m.origin, trust, source.certificates, (), source.ocsp_responses,
            )
    actual = b"".join(r.leaves for r in results)
    pairs: set[tuple[bytes, bytes]] = set()
    for r in results:
        pairs |= r.pairs
        report.records_valid += r.valid
        for t in (r.first_created, r.last_created):
            if t is not None:
                report.first_created = t if report.first_created is None else min(report.first_created, t)
                report.last_created = t if report.last_created is None else max(report.last_created, t)
    report.certificates = len(pairs)
    # (2) the checkpoints
    verified, cp_findings = early if early is not None and not early[1] else verify_checkpoints(
        source.checkpoints, m.origin, trust, source.certificates, pairs, source.ocsp_responses,
    )
    report.checkpoints_verified = len(verified)
    # (4) order and completeness against the stored leaf hashes; (5) the tree against the checkpoints
    index = source.leaves
    n_actual, n_index = len(actual) // HASH_SIZE, len(index) // HASH_SIZE
    index_ok = len(index) % HASH_SIZE == 0
    inside = [v for v in verified if m.start <= v.size]
    roots_index = roots_actual if index == actual else _roots_at(  # the usual case: one tree, built once
        m.start, m.prefix, index, [v.size for v in inside if index_ok and v.size <= m.start + n_index])
    index_authentic = any(roots_index.get(v.size) == v.root_hash for v in inside) and index_ok
    covered = 0
    reproduced: set[int] = set()
    tree_findings: list[Finding] = []
    for v in sorted(verified, key=lambda v: v.size):
        where = f"checkpoint {v.number} (size {v.size})"
        if v.size < m.start:
            tree_findings.append(Finding(where=where, problem="range", severity="note",
                                         message=f"precedes the archive's first record {m.start}; not compared"))
            continue
        got = roots_actual.get(v.size)
        if got is None:
            tree_findings.append(Finding(
                where=where, problem="tree",
                message=f"commits to {v.size} records but the archive ends at {m.start + n_actual} "
                        "(records missing or archive cut short)",
            ))
        elif got != v.root_hash:
            tree_findings.append(Finding(
                where=where, problem="tree",
                message=f"records {max(covered, m.start)}..{v.size - 1} do not reproduce the signed root hash (records "
                        "altered, missing, inserted or reordered" + (
                            "; the stored leaf hashes do, see the records named"
                            if roots_index.get(v.size) == v.root_hash else
                            "; the stored leaf hashes were changed too, so the records cannot be named") + ")",
            ))
        else:
            covered = max(covered, v.size)
            reproduced.add(v.size)
    report.covered_until = covered
    # per-record findings, named by the sequence number they belong to
    by_line: dict[int, int] = {}
    aligned = compare_with_index(
        [actual[i:i + HASH_SIZE] for i in range(0, len(actual), HASH_SIZE)],
        [index[i:i + HASH_SIZE] for i in range(0, len(index) - len(index) % HASH_SIZE, HASH_SIZE)],
        m.start,
    ) if index_ok and index != actual else []
    qualifier = "" if index_authentic else " (per leaves.bin, which no verified checkpoint vouches for)"
    order_findings: list[Finding] = []
    for line, seq, problem, message in aligned:
        if line is not None and seq is not None:
            by_line[line] = seq
        order_findings.append(Finding(where=f"record {seq}" if seq is not None else f"position {m.start + (line or 0)}",
                                      problem=problem, message=message + qualifier, seq=seq))
    if not index_ok:
        add(Finding(where="archive", problem="malformed",
                    message=f"leaves.bin is {len(index)} bytes, not a multiple of {HASH_SIZE}"))
    line_base = 0
    record_findings: list[Finding] = []
    for r in results:
        for f in r.findings:
            line = line_base + f.line
            seq = by_line.get(line, m.start + line)
            record_findings.append(Finding(where=f"record {seq}", problem=f.problem, message=f.message, seq=seq))
        line_base += r.lines
    # (6) responses bound to the request records of the same exchange
    request_sigs: dict[str, bytes] = {}
    for r in results:
        for _, request_id, request_sig in r.requests:
            request_sigs.setdefault(request_id, request_sig)
    line_base = 0
    for r in results:
        for line, request_id, bound in r.responses:
            logged = request_sigs.get(request_id)
            if logged is not None and logged != bound:
                seq = by_line.get(line_base + line, m.start + line_base + line)
                record_findings.append(Finding(
                    where=f"record {seq}", problem="binding", seq=seq,
                    message=f"the response is bound to a request signature other than that of the logged "
                            f"request {request_id[:80]!r}",
                ))
        line_base += r.lines
    # (7) coverage: records that no verified checkpoint commits to (a checkpoint that commits to records but
    #     whose root they do not reproduce is reported under (5) instead)
    end_actual = m.start + n_actual
    committed = max((v.size for v in verified), default=0)
    if committed < end_actual:
        first_uncovered = max(committed, m.start)
        report.findings.append(Finding(
            where=f"records {first_uncovered}..{end_actual - 1}", problem="coverage",
            message="not covered by any verified checkpoint: their place in the log is not proven",
        ))
    # (8) the witnesses' cosignatures, against the policy of the configuration in force
    witness_findings: list[Finding] = []
    try:
        server = parse_origin(m.origin).server
    except GatewayError:
        server = None  # step 2 has reported the origin
    if server is not None:
        report.witnesses, witness_findings = check_witnesses(
            source.checkpoints, verified, trust, server, reproduced=reproduced, quorum=witness_quorum)
    report.evidence = TreeEvidence(
        name=archive_name or m.origin, origin=m.origin, start=m.start, prefix=tuple(m.prefix), leaves=actual,
        authentic_until=max(covered, m.start),
        checkpoints=tuple(EvidenceCheckpoint(number=v.number, size=v.size, root_hash=v.root_hash,
                                             note=source.checkpoints[v.number - 1].note,
                                             cosignatures=source.checkpoints[v.number - 1].cosignatures or b"")
                          for v in verified),
    )
    report.findings[:0] = cp_findings
    report.findings.extend(witness_findings)
    report.findings.extend(order_findings)
    report.findings.extend(tree_findings)
    report.findings.extend(sorted(record_findings, key=lambda f: (f.seq or 0)))
    return report


__all__ = [
    "RECORD_FIELDS",
    "ArchiveSource",
    "CheckContext",
    "Checked",
    "ChunkData",
    "ChunkResult",
    "ChunkRunner",
    "EvidenceCheckpoint",
    "Finding",
    "LeanChecker",
    "LeanInput",
    "ProcessPoolRunner",
    "RecordChecker",
    "RecordFinding",
    "Severity",
    "SplitView",
    "TreeEvidence",
    "TrustSet",
    "VerifiedCheckpoint",
    "VerifyReport",
    "WitnessSummary",
    "check_chunk",
    "check_witnesses",
    "compare_with_index",
    "find_split_views",
    "lean_input",
    "load_trust",
    "runner_for",
    "serial_runner",
    "split_record",
    "usable_cpus",
    "verify_archive",
    "verify_checkpoints",
]
