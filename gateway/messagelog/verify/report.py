"""What the archive verifier reports: findings, the whole report, and each chunk's result (pure).

:class:`VerifyReport` is what :func:`gateway.messagelog.verify.verify_archive` returns; :class:`ChunkResult` is
what step 3 (:func:`gateway.messagelog.verify.chunks.check_chunk`) returns for one records member, in this
process or from a worker process (so it is picklable and small).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from gateway.globalconf.model import format_time
from gateway.messagelog.verify.splitview import TreeEvidence

Severity = Literal["error", "note"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One thing that does not verify (``severity="error"``) or that the auditor should know (``"note"``)."""

    where: str  # "record 17", "checkpoint 2 (size 120)", "global configuration globalconf/ab12...json", "archive"
    problem: str  # a short name: altered, missing, out-of-order, inserted, malformed, signature, certificate...
    message: str
    seq: int | None = None
    severity: Severity = "error"

    def line(self) -> str:
        tag = "FAIL" if self.severity == "error" else "note"
        return f"{tag} {self.where}: {self.problem}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessSummary:
    """What step 8 (:mod:`~gateway.messagelog.verify.witnesses`) found, for the report's summary."""

    policy: str  # e.g. "quorum 2 of 2 witnesses (...; configuration version 7)", or "none"
    required: int | None  # the quorum applied (None: nothing required)
    witnessed: int  # checkpoints cosigned by the quorum themselves
    covered: int  # checkpoints below the quorum but inside a witnessed one
    checked: int  # verified checkpoints looked at


@dataclass(slots=True, kw_only=True)
class VerifyReport:
    """What :func:`verify_archive` found (mutable while it runs)."""

    origin: str
    start: int
    end: int
    records_read: int = 0
    records_valid: int = 0  # records that passed step 3 on their own
    checkpoints: int = 0
    checkpoints_verified: int = 0
    covered_until: int = 0  # records below this sequence number are inside a verified checkpoint
    configurations: tuple[int, ...] = ()  # versions of the verified global configurations
    certificates: int = 0  # distinct signing certificate + OCSP response pairs seen
    first_created: datetime | None = None
    last_created: datetime | None = None
    findings: list[Finding] = field(default_factory=list)
    witnesses: WitnessSummary | None = None  # step 8, once the checkpoints are verified
    evidence: TreeEvidence | None = field(default=None, repr=False)  # for split-view comparisons

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def summary(self) -> str:
        span = "" if self.first_created is None or self.last_created is None else (
            f", created {format_time(self.first_created)} .. {format_time(self.last_created)}")
        lines = [
            f"origin {self.origin}: records {self.start}..{self.end - 1} ({self.end - self.start}){span}",
            f"global configurations verified against the anchor: "
            f"{', '.join(f'version {v}' for v in self.configurations) or 'none'}",
            f"records: {self.records_read} read, {self.records_valid} with valid signature, certificate, OCSP "
            f"and body ({self.certificates} distinct certificate/OCSP pairs)",
            f"checkpoints: {self.checkpoints_verified} of {self.checkpoints} verified (signature and timestamp)",
            f"tree: records below {self.covered_until} are covered by a verified checkpoint",
        ]
        w = self.witnesses
        if w is not None:
            lines.append(
                f"witnesses: policy {w.policy}; " + (
                    "no quorum required" if w.required is None else
                    f"{w.witnessed} of {w.checked} verified checkpoints cosigned by a quorum of {w.required}"
                    + (f", {w.covered} more inside a witnessed one" if w.covered else "")))
        lines += [f.line() for f in self.findings]
        n = len(self.errors)
        lines.append("RESULT: OK, everything verifies" if n == 0 else f"RESULT: FAILED, {n} problem(s)")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordFinding:
    line: int  # 0-based line in its chunk
    problem: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkResult:
    """What a worker returns for one records member."""

    first: int
    lines: int
    leaves: bytes  # 32 bytes per line, in line order
    valid: int
    findings: tuple[RecordFinding, ...]
    requests: tuple[tuple[int, str, bytes], ...]  # (line, request_id, signature) of request records
    responses: tuple[tuple[int, str, bytes], ...]  # (line, request_id, bound request signature)
    pairs: frozenset[tuple[bytes, bytes]]  # distinct (signing certificate, OCSP response), DER
    first_created: datetime | None
    last_created: datetime | None
    # the roots of merkle.perfect_ranges(first, first + lines) over the leaves: where the records before these
    # are as many as the manifest says, the tree of step 5 takes them in place of the leaves
    roots: tuple[bytes, ...] = ()


__all__ = ["ChunkResult", "Finding", "RecordFinding", "Severity", "VerifyReport", "WitnessSummary"]
