"""The handler of ``gateway log verify``: an archive checked offline against the instance's anchor (I/O shell).

Kept apart from :mod:`gateway.cli.commands.log`, whose commands work on the online database: this one imports
neither SQLAlchemy nor the message-log store, so an auditor's verification starts in a tenth of a second
rather than the best part of one. The verification itself is :func:`gateway.messagelog.verify.verify_archive`,
with its records checked in ``--workers`` processes (docs/auditing.md sections 1 and 5); an audit archive
(``gateway admin audit export``) is recognised by its manifest and verified by
:func:`gateway.admin.auditverify.verify_audit_archive` (docs/auditing.md section 7).
"""

import argparse
import sys
import time

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


def _verify_audit(args: argparse.Namespace) -> int:
    """An audit archive (docs/auditing.md section 7): read whole, verified in this process."""
    from gateway.admin.auditarchive import read_archive
    from gateway.admin.auditverify import verify_audit_archive
    from gateway.globalconf.anchor import Anchor

    anchor = Anchor.from_file(args.anchor)
    try:
        content = read_archive(args.archive)
    except TrustError as e:
        print(f"FAIL archive: {e.message}")
        print("RESULT: FAILED, the file is not a verifiable archive")
        return 1
    report = verify_audit_archive(content, anchor, quorum=getattr(args, "witness_quorum", None))
    print(f"audit archive {args.archive}")
    print(report.summary())
    return 0 if report.ok else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from gateway.admin.auditarchive import is_audit_archive
    from gateway.globalconf.anchor import Anchor
    from gateway.messagelog.archive import LogArchive
    from gateway.messagelog.verify import runner_for, usable_cpus, verify_archive
    from gateway.messagelog.verify.parallel import quiet_gc

    if is_audit_archive(args.archive):
        return _verify_audit(args)
    anchor = Anchor.from_file(args.anchor)
    try:
        archive = LogArchive(args.archive)
    except TrustError as e:
        print(f"FAIL archive: {e.message}")
        print("RESULT: FAILED, the file is not a verifiable archive")
        return 1
    with archive:
        workers = args.workers if args.workers is not None else usable_cpus()
        runner = runner_for(workers, len(archive.manifest.chunks))
        quiet_gc()  # this process checks records too (--workers 1), or builds the tree from the workers' results
        try:
            report = verify_archive(archive, anchor, runner=runner, progress=_Progress())
        except GatewayError as e:  # a lost worker process, a member that cannot be read: no result at all
            print(f"archive {args.archive}")
            print(f"RESULT: FAILED, the verification did not complete: {e.message}")
            print(f"gateway: error: {e.diagnostics()}", file=sys.stderr)
            return 1
    print(f"archive {args.archive}")
    print(report.summary())
    return 0 if report.ok else 1


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
