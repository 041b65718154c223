"""Offline verification of an audit archive, trusting nothing but the anchor (pure).

docs/auditing.md section 7. :func:`verify_audit_archive` takes an archive's contents
(:class:`gateway.admin.auditarchive.AuditArchiveContent`) and the instance's anchor, and returns an
:class:`AuditVerifyReport` of precise findings, empty when everything verifies. The steps:

1. Global configurations: those that verify against the anchor (:func:`gateway.messagelog.verify.trustset.load_trust`).
2. Checkpoints: each note names the audit log's origin (``<server id>/audit``), carries an RFC 3161 token by
   a TSA of the configuration, and is signed by a signing key of the member that owns the server, whose
   certificate chains to a trusted CA and is good by an OCSP response in the archive at the timestamp: the
   message log's step 2, :func:`gateway.messagelog.verify.checkpoints.verify_checkpoints`.
3. Entries: each line is an entry in its canonical encoding (version 1, :mod:`gateway.admin.auditlog`) whose
   ``seq`` is its line number; its leaf hash is computed from the line and compared with the stored one
   (``leaves.bin``), and the stored leaves must reproduce each verified checkpoint's root
   (:func:`gateway.admin.auditlog.check_chain`): a changed entry is named by its sequence number; a change
   that also rewrote the stored leaf is found as a range that does not reproduce a checkpoint.
4. Witnesses: when the global configuration has a witness policy for the server, the newest verified
   checkpoint needs cosignatures (c2sp.org/tlog-cosignature@v1.0.1) by at least ``quorum`` of its witnesses,
   each verified against the policy's key. ``quorum`` lowers the requirement for this run (the report says so).
5. Coverage: entries after the newest verified checkpoint are reported as not covered.

The report's :class:`~gateway.messagelog.verify.splitview.TreeEvidence` (the verified checkpoints and the stored
leaves, authentic up to the largest checkpoint they reproduce) lets ``gateway log verify A --against B`` find a
split view between two audit archives of one server with the message log's
:func:`~gateway.messagelog.verify.splitview.find_split_views` (docs/witness.md sections 6 and 7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.admin.auditarchive import AuditArchiveContent
from gateway.admin.auditlog import EntryFields, HeadRef, check_chain, encode_entry, parse_audit_origin
from gateway.errors import TrustError
from gateway.globalconf.anchor import Anchor
from gateway.globalconf.model import format_time
from gateway.messagelog.archive import CheckpointData
from gateway.messagelog.checkpoint import parse_note
from gateway.messagelog.merkle import HASH_SIZE, leaf_hash
from gateway.messagelog.verify.checkpoints import VerifiedCheckpoint, verify_checkpoints
from gateway.messagelog.verify.report import Finding
from gateway.messagelog.verify.splitview import EvidenceCheckpoint, TreeEvidence
from gateway.messagelog.verify.trustset import load_trust
from gateway.trust.canonical import loads_canonical
from gateway.trust.cosignature import parse_line, verified_witnesses

_ENTRY_KEYS = frozenset({"v", "seq", "at", "actor", "auth", "remote", "action", "method", "path", "result",
                         "status", "details"})


@dataclass(slots=True, kw_only=True)
class AuditVerifyReport:
    origin: str
    entries: int = 0
    checkpoints: int = 0
    checkpoints_verified: int = 0
    covered_until: int = 0
    configurations: tuple[int, ...] = ()
    witnessed: str = "no witness policy in the global configuration"
    first_at: datetime | None = None
    last_at: datetime | None = None
    findings: list[Finding] = field(default_factory=list)
    evidence: TreeEvidence | None = None  # for split views between archives (module docstring)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def summary(self) -> str:
        span = "" if self.first_at is None or self.last_at is None else (
            f", {format_time(self.first_at)} .. {format_time(self.last_at)}")
        lines = [
            f"audit log {self.origin}: entries 0..{self.entries - 1} ({self.entries}){span}",
            "global configurations verified against the anchor: "
            f"{', '.join(f'version {v}' for v in self.configurations) or 'none'}",
            f"checkpoints: {self.checkpoints_verified} of {self.checkpoints} verified (signature and timestamp)",
            f"witnesses: {self.witnessed}",
            f"tree: entries below {self.covered_until} are covered by a verified checkpoint",
        ]
        lines += [f.line() for f in self.findings]
        n = sum(1 for f in self.findings if f.severity == "error")
        lines.append("RESULT: OK, everything verifies" if n == 0 else f"RESULT: FAILED, {n} problem(s)")
        return "\n".join(lines)


def parse_entry(line: bytes) -> EntryFields:
    """An entry line in its canonical encoding, version 1.

    Raises:
        TrustError: not canonical JSON, other keys or types, another version.
    """
    obj = loads_canonical(line, what="audit entry")
    if not isinstance(obj, dict) or set(obj) != _ENTRY_KEYS:
        raise TrustError("audit entry: not an object with exactly the keys of encoding version 1")
    if obj["v"] != 1:
        raise TrustError(f"audit entry: encoding version {obj['v']!r} is not 1")
    ints = ("seq", "status")
    strs = _ENTRY_KEYS - {"v", *ints}
    if not all(isinstance(obj[k], int) and not isinstance(obj[k], bool) for k in ints) or not all(
            isinstance(obj[k], str) for k in strs):
        raise TrustError("audit entry: seq and status must be integers, the other fields strings")
    try:
        at = datetime.strptime(obj["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError as e:
        raise TrustError(f"audit entry: time {obj['at'][:40]!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ") from e
    entry = EntryFields(
        seq=obj["seq"], at=at, actor=obj["actor"], auth=obj["auth"], remote=obj["remote"],
        action=obj["action"], method=obj["method"], path=obj["path"], result=obj["result"], status=obj["status"],
        details=obj["details"],
    )
    if encode_entry(entry) != line:  # pragma: no cover - canonical input and exact keys re-encode identically
        raise TrustError("audit entry: does not re-encode to the same bytes")
    return entry


def verify_audit_archive(archive: AuditArchiveContent, anchor: Anchor, *, quorum: int | None = None,
                         name: str = "archive") -> AuditVerifyReport:
    """Verify an audit archive (module docstring); never stops at the first problem. ``name`` is how split-view
    evidence names the archive (its path)."""
    report = AuditVerifyReport(origin=archive.origin, entries=len(archive.entries),
                               checkpoints=len(archive.checkpoints))
    findings = report.findings
    # (1) configurations
    trust, conf_findings = load_trust(anchor, archive.globalconfs)
    findings.extend(conf_findings)
    try:
        server = parse_audit_origin(archive.origin)
    except TrustError as e:
        findings.append(Finding(where="archive", problem="origin", message=e.message))
        return report
    # (2) checkpoints
    verified: list[VerifiedCheckpoint] = []
    if trust is not None:
        report.configurations = tuple(c.version for c in trust.confs)
        verified, cp_findings = verify_checkpoints(
            [CheckpointData(note=c.note, timestamp=c.timestamp) for c in archive.checkpoints], "", trust,
            archive.certificates, (), archive.ocsp_responses, checkpoint_origin=archive.origin, owner=server.owner,
        )
        findings.extend(cp_findings)
    report.checkpoints_verified = len(verified)
    # (3) entries against their stored leaves and the verified roots
    chain: list[tuple[int, bytes, bytes]] = []
    for i, line in enumerate(archive.entries):
        stored = archive.leaves[i * HASH_SIZE:(i + 1) * HASH_SIZE]
        try:
            entry = parse_entry(line)
        except TrustError as e:
            findings.append(Finding(where=f"entry {i}", problem="malformed", message=e.message, seq=i))
            chain.append((i, stored, stored))
            continue
        report.first_at = entry.at if report.first_at is None else min(report.first_at, entry.at)
        report.last_at = entry.at if report.last_at is None else max(report.last_at, entry.at)
        chain.append((entry.seq, leaf_hash(line), stored))
    result = check_chain(chain, [HeadRef(size=v.size, root_hash=v.root_hash) for v in verified])
    findings.extend(Finding(where=p.where, problem=p.problem, message=p.message, seq=p.seq) for p in result.problems)
    good = [v for v in verified if v.size in result.reproduced]
    report.evidence = TreeEvidence(
        name=name, origin=archive.origin, start=0, prefix=(), leaves=archive.leaves,
        authentic_until=max((v.size for v in good), default=0),
        checkpoints=tuple(EvidenceCheckpoint(
            number=v.number, size=v.size, root_hash=v.root_hash, note=archive.checkpoints[v.number - 1].note,
            cosignatures=b"".join(line + b"\n" for line in archive.checkpoints[v.number - 1].cosignatures),
        ) for v in verified),
    )
    # (4) witnesses of the newest verified checkpoint
    if trust is not None and good:
        newest = max(good, key=lambda v: v.size)
        _, conf = trust.at(newest.gen_time)
        policy = conf.witness_policy(server)
        if policy is not None:
            need = policy.quorum if quorum is None else quorum
            data = archive.checkpoints[newest.number - 1]
            lines = []
            for raw in data.cosignatures:
                try:
                    lines.append(parse_line(raw))
                except TrustError as e:
                    findings.append(Finding(where=f"checkpoint {newest.number} (size {newest.size})",
                                            problem="cosignature", message=e.message))
            text = parse_note(data.note).text
            try:
                by = verified_witnesses(text, lines, policy.keys())
            except TrustError as e:
                by = {}
                findings.append(Finding(where=f"checkpoint {newest.number} (size {newest.size})",
                                        problem="cosignature", message=e.message))
            names = ", ".join(sorted(by)) or "none"
            report.witnessed = (f"checkpoint {newest.size} cosigned by {len(by)} of {len(policy.witnesses)} "
                                f"witnesses ({names}); quorum {need}")
            if quorum is not None and quorum != policy.quorum:
                report.witnessed += f" (set for this run; the policy's quorum is {policy.quorum})"
                findings.append(Finding(where="archive", problem="quorum", severity="note",
                                        message=f"witness quorum {quorum} given on the command line instead of "
                                                f"the policy's {policy.quorum}"))
            if len(by) < need:
                findings.append(Finding(
                    where=f"checkpoint {newest.number} (size {newest.size})", problem="witnesses",
                    message=f"cosigned by {len(by)} witness(es) of the policy ({names}); the quorum is {need}",
                ))
    # (5) coverage
    report.covered_until = max((v.size for v in good), default=0)
    if report.covered_until < len(archive.entries):
        findings.append(Finding(
            where=f"entries {report.covered_until}..{len(archive.entries) - 1}", problem="uncovered",
            message="no verified checkpoint covers these entries",
        ))
    return report


__all__ = ["AuditVerifyReport", "parse_entry", "verify_audit_archive"]
