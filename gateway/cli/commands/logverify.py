"""The handler of ``gateway log verify``: an archive checked offline against the instance's anchor (I/O shell).

Kept apart from :mod:`gateway.cli.commands.log`, whose commands work on the online database: this one imports
neither SQLAlchemy nor the message-log store, so an auditor's verification starts in a tenth of a second
rather than the best part of one. The verification itself is :func:`gateway.messagelog.verify.verify_archive`,
with its records checked in ``--workers`` processes (docs/auditing.md sections 1 and 5); an audit archive
(``gateway admin audit export``) is recognised by its manifest and verified by
:func:`gateway.admin.auditverify.verify_audit_archive` (docs/auditing.md section 7).
"""

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.errors import GatewayError, TrustError


class _Progress:
    """Progress on standard error for large archives, at most once a second."""

    def __init__(self) -> None:
        self._clock = time.monotonic
        self._last = 0.0
        self._t0 = self._clock()

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if total >= 20_000 and (now - self._last >= 1.0 or done == total):
            self._last = now
            rate = done / max(now - self._t0, 1e-9)
            print(f"verified {done}/{total} records ({rate:,.0f} records/s)", file=sys.stderr, flush=True)


def _verify_audit(args: argparse.Namespace, paths: list[str]) -> int:
    """Audit archives (docs/auditing.md section 7), each read whole and verified in this process, then compared
    pairwise for split views (docs/witness.md sections 6 and 7)."""
    from gateway.admin.auditarchive import read_archive
    from gateway.admin.auditverify import verify_audit_archive
    from gateway.globalconf.anchor import Anchor
    from gateway.messagelog.verify import find_split_views

    anchor = Anchor.from_file(args.anchor)
    results: list[tuple[str, Any, str | None]] = []
    for path in paths:
        try:
            content = read_archive(path)
        except TrustError as e:
            results.append((path, None, f"FAIL archive: {e.message}\nRESULT: FAILED, the file is not a verifiable "
                                        "archive"))
            continue
        results.append((path, verify_audit_archive(content, anchor, quorum=getattr(args, "witness_quorum", None),
                                                   name=path), None))
    views = []
    for i, (_, ra, _) in enumerate(results):
        for _, rb, _ in results[i + 1:]:
            if ra is not None and rb is not None and ra.evidence is not None and rb.evidence is not None:
                views += find_split_views(ra.evidence, rb.evidence)
    ok = all(r is not None and r.ok for _, r, _ in results) and not views
    if getattr(args, "json", False):
        print(json.dumps({"ok": ok, "archives": [{"archive": p, "ok": False, "error": e} if r is None else {
            "archive": p, "ok": r.ok, "origin": r.origin, "entries": r.entries, "checkpoints": r.checkpoints,
            "checkpoints_verified": r.checkpoints_verified, "covered_until": r.covered_until,
            "witnesses": r.witnessed,
            "findings": [{"where": f.where, "problem": f.problem, "message": f.message, "severity": f.severity}
                         for f in r.findings],
        } for p, r, e in results], "split_views": [v.to_dict() for v in views]}, indent=2))
        return 0 if ok else 1
    for path, report, error in results:
        print(f"audit archive {path}")
        print(report.summary() if report is not None else error)
    return _split_view_result(len(results), views, (), ok)


def _verify_one(path: str, anchor: Any, args: argparse.Namespace) -> tuple[Any, str | None]:
    """One archive verified: ``(report, None)``, or ``(None, why)`` when there is no result at all."""
    from gateway.messagelog.archive import LogArchive
    from gateway.messagelog.verify import runner_for, usable_cpus, verify_archive
    from gateway.messagelog.verify.parallel import quiet_gc

    try:
        archive = LogArchive(path)
    except TrustError as e:
        return None, f"FAIL archive: {e.message}\nRESULT: FAILED, the file is not a verifiable archive"
    with archive:
        workers = args.workers if args.workers is not None else usable_cpus()
        runner = runner_for(workers, len(archive.manifest.chunks))
        quiet_gc()  # this process checks records too (--workers 1), or builds the tree from the workers' results
        try:
            report = verify_archive(archive, anchor, runner=runner, progress=_Progress(),
                                    witness_quorum=getattr(args, "witness_quorum", None), name=path)
        except GatewayError as e:  # a lost worker process, a member that cannot be read: no result at all
            print(f"gateway: error: {e.diagnostics()}", file=sys.stderr)
            return None, f"RESULT: FAILED, the verification did not complete: {e.message}"
    return report, None


def _report_dict(path: str, report: Any, error: str | None) -> dict[str, Any]:
    if report is None:
        return {"archive": path, "ok": False, "error": error}
    w = report.witnesses
    return {
        "archive": path, "ok": report.ok, "origin": report.origin, "start": report.start, "end": report.end,
        "records_read": report.records_read, "records_valid": report.records_valid,
        "checkpoints": report.checkpoints, "checkpoints_verified": report.checkpoints_verified,
        "covered_until": report.covered_until,
        "witnesses": None if w is None else {"policy": w.policy, "quorum": w.required, "witnessed": w.witnessed,
                                             "covered": w.covered, "checked": w.checked},
        "findings": [{"where": f.where, "problem": f.problem, "message": f.message, "severity": f.severity}
                     for f in report.findings],
    }


def cmd_verify(args: argparse.Namespace) -> int:
    """``gateway log verify ARCHIVE [--against OTHER ...]``: exit 0 only if every archive verifies and no two of
    them show a split view (docs/auditing.md, docs/witness.md sections 5-6); 1 otherwise."""
    from gateway.admin.auditarchive import is_audit_archive
    from gateway.globalconf.anchor import Anchor
    from gateway.messagelog.verify import find_split_views

    paths = [args.archive, *getattr(args, "against", [])]
    if is_audit_archive(args.archive):
        return _verify_audit(args, paths)
    anchor = Anchor.from_file(args.anchor)
    results = [(path, *_verify_one(path, anchor, args)) for path in paths]
    views = []
    notes: list[str] = []
    for i, (pa, ra, _) in enumerate(results):
        for pb, rb, _ in results[i + 1:]:
            if ra is None or rb is None or ra.evidence is None or rb.evidence is None:
                continue
            if ra.origin != rb.origin:
                notes.append(f"note {pa} and {pb}: origins {ra.origin} and {rb.origin} differ, not compared")
                continue
            views += find_split_views(ra.evidence, rb.evidence)
    ok = all(r is not None and r.ok for _, r, _ in results) and not views
    if getattr(args, "json", False):
        print(json.dumps({"ok": ok, "archives": [_report_dict(p, r, e) for p, r, e in results],
                          "split_views": [v.to_dict() for v in views], "notes": notes}, indent=2))
        return 0 if ok else 1
    for path, report, error in results:
        print(f"archive {path}")
        print(report.summary() if report is not None else error)
    return _split_view_result(len(results), views, notes, ok)


def _split_view_result(archives: int, views: Sequence[Any], notes: Iterable[str], ok: bool) -> int:
    """Print the comparison of several archives (split views, with their evidence) and the result; the exit
    code: 0 when every archive verifies and they agree, else 1."""
    if archives > 1:
        print(f"split views between the {archives} archives: {len(views)}")
        for note in notes:
            print(note)
        for view in views:
            print(f"FAIL split view: {view.message()}")
            for line in view.evidence():
                print(f"  {line}")
        print("RESULT: OK, every archive verifies and they agree" if ok else
              "RESULT: FAILED, " + (f"{len(views)} split view(s): the log signed histories that cannot both be true"
                                    if views else "an archive does not verify"))
    return 0 if ok else 1


def cmd_verify_usage(args: argparse.Namespace) -> int:
    """``gateway log verify-usage FILE --anchor ANCHOR``: a portal's evidence file checked offline, entry by entry
    (docs/transparency.md section 5); exit 0 only if every entry is proven."""
    from gateway.globalconf.anchor import Anchor
    from gateway.transparency.evidence import verify_file

    anchor = Anchor.from_file(args.anchor)
    try:
        with open(args.file, "rb") as f:
            data = f.read()
        subject, verdicts = verify_file(data, anchor)
    except OSError as e:
        print(f"RESULT: FAILED, the file cannot be read: {e}")
        return 1
    except TrustError as e:
        print(f"RESULT: FAILED, {e.message}")
        return 1
    print(f"evidence of {subject or '(no subject)'}: {len(verdicts)} entries")
    for n, verdict in verdicts:
        if verdict.proven:
            when = "" if verdict.logged_by is None else f", logged by {verdict.logged_by.isoformat()}"
            print(f"entry {n}: proven{when}" + "".join(f"; {note}" for note in verdict.notes))
        else:
            print(f"entry {n}: NOT proven: " + "; ".join(verdict.problems))
    failed = sum(1 for _, v in verdicts if not v.proven)
    if failed or not verdicts:
        print(f"RESULT: FAILED, {failed} of {len(verdicts)} entries not proven")
        return 1
    print(f"RESULT: OK, all {len(verdicts)} entries proven")
    return 0
