"""Benchmark: ``gateway log verify`` on a large archive, in records per second, at several ``--workers``.

Builds an archive of ``--records`` (default 100 000) synthetic but properly signed records: exchanges signed
with RFC 9421 by two members' keys from a development CA, stapled OCSP responses, a global configuration
signed under an anchor, and real checkpoints (C2SP signed notes with RFC 3161 timestamp tokens) every
``--checkpoint-every`` records. Then runs the command an auditor runs, ``gateway log verify ARCHIVE --anchor
ANCHOR --workers N``, as a process of its own, for each N of ``--workers`` (default ``1,2``) in turn, A B A B,
``--rounds`` times (default 3), and prints for each run the records per second (wall clock, from start to exit
of the command), its CPU time (all its processes) per record, and the rate that this CPU time would give on
idle cores (one per worker): the figure to compare when other work shares the machine.

    .venv/bin/python bench/logverify.py [--records 100000] [--workers 1,2] [--rounds 3] [--keep DIR | --reuse DIR]
                                        [--before REV]

``--keep DIR`` keeps the archive and its anchor in DIR; ``--reuse DIR`` verifies the ones kept there instead
of building new ones. ``--before REV`` also runs the command of git revision REV (its ``gateway/`` exported
into a temporary directory) on the same archive, alternated with this tree's: REV must read this tree's
archive format.

Target (issue 10, item 7): at least 20 000 records/s with 2 workers on 2 cores (goal 25 000). Each record
costs one ECDSA P-256 verification (measured here each run, through the ``cryptography`` binding as the
verifier calls it), so the rate is bounded by ``cores / verify time``. Other work on the machine moves the
figures: compare only runs of one invocation, which alternates the variants.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from archive_kit import make_log, make_world, write_archive  # noqa: E402

from gateway.messagelog.verify import usable_cpus  # noqa: E402

# the command, run from the source tree given as its first argument (this one, or the export of --before REV),
# whatever the virtual environment's editable install points at
_COMMAND = "\n".join((
    "import sys",
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]",
    "sys.path.insert(0, sys.argv.pop(1))",
    "import gateway",
    "assert gateway.__file__.startswith(sys.path[0]), gateway.__file__",
    "from gateway.cli import main",
    "sys.argv[0] = 'gateway'",
    "sys.exit(main())",
))


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes, and theirs."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


def _cores(workers: int) -> int:
    """The cores that ``--workers`` keeps busy: one per worker, at most the usable CPUs."""
    return min(workers, usable_cpus())


def _ecdsa_us() -> float:
    """One ECDSA P-256 verification on this machine, in microseconds of CPU (best of 5 runs of 500)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(b"x" * 2400).digest()
    alg = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    sig = key.sign(digest, alg)
    pub = key.public_key()
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(500):
            pub.verify(sig, digest, alg)
        best = min(best, (time.process_time() - t0) / 500 * 1e6)
    return best


def _verify(tree: Path, archive: Path, anchor: Path, workers: int, records: int) -> tuple[float, float]:
    """One run of ``gateway log verify`` from ``tree``: (records/s, CPU µs per record). Exits if it fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    argv = [sys.executable, "-c", _COMMAND, str(tree), "log", "verify", str(archive), "--anchor", str(anchor),
            "--workers", str(workers)]
    c0, t0 = _children_cpu(), time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if done.returncode != 0 or f"records: {records} read, {records} with valid" not in done.stdout:
        print(done.stdout + done.stderr)
        raise SystemExit(f"gateway log verify --workers {workers} failed (exit status {done.returncode})")
    return records / elapsed, cpu / records * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--checkpoint-every", type=int, default=25_000)
    ap.add_argument("--workers", default="1,2", help="comma-separated --workers values, run in turn (default 1,2)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", help="write the archive and its anchor into this directory and keep them")
    ap.add_argument("--reuse", help="verify the archive and anchor kept in this directory by --keep")
    ap.add_argument("--before", help="a git revision whose gateway log verify runs beside this tree's, alternated")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.reuse or args.keep or tmp)
        d.mkdir(parents=True, exist_ok=True)
        path, anchor_file = d / "bench.zip", d / "anchor.json"
        if not args.reuse:
            # (1) build
            t0 = time.perf_counter()
            world = make_world(d)
            log = make_log(world, (args.records + 1) // 2, per_second=50)
            sizes = [*range(args.checkpoint_every, len(log), args.checkpoint_every), len(log)]
            write_archive(world, path, log, checkpoint_sizes=sizes)
            anchor_file.write_bytes(world.anchor.to_bytes())
            print(f"built {len(log)} records, {len(sizes)} checkpoints, {path.stat().st_size / 2**20:.0f} MiB "
                  f"in {time.perf_counter() - t0:.1f} s")
            del log
        from gateway.messagelog.archive import LogArchive

        with LogArchive(path) as a:
            records = a.manifest.end - a.manifest.start
        trees = [("this tree", ROOT)]
        if args.before:
            # an exported copy of the revision (git archive): no worktree, nothing written to the repository
            before = Path(tmp) / "before"
            before.mkdir()
            exported = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "gateway"],
                                      capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=exported, check=True)
            trees.insert(0, (f"before {args.before}", before))
        ecdsa_us = _ecdsa_us()
        print(f"load average {os.getloadavg()[0]:.2f} on {usable_cpus()} usable CPUs; one ECDSA P-256 "
              f"verification costs {ecdsa_us:.0f} us of CPU here, so {usable_cpus()} cores allow at most "
              f"{usable_cpus() * 1e6 / ecdsa_us:,.0f} records/s")
        # (2) verify, alternated: every variant once per round
        rates: dict[tuple[str, int], list[float]] = {}
        cpus: dict[tuple[str, int], list[float]] = {}
        for rnd in range(args.rounds):
            for n in workers:
                for label, tree in trees:
                    rate, cpu_us = _verify(tree, path, anchor_file, n, records)
                    rates.setdefault((label, n), []).append(rate)
                    cpus.setdefault((label, n), []).append(cpu_us)
                    print(f"round {rnd + 1}, {label}, --workers {n}: {rate:,.0f} records/s; CPU {cpu_us:.0f} us "
                          f"per record ({cpu_us - ecdsa_us:.0f} besides the ECDSA verification), which "
                          f"{_cores(n)} idle core(s) would run at {_cores(n) * 1e6 / cpu_us:,.0f} records/s",
                          flush=True)
        # (3) summary
        print(f"\n{records} records, {args.rounds} rounds alternated; load average now {os.getloadavg()[0]:.2f}")
        print("| tree | --workers | records/s, wall clock (min / median / max) | CPU per record, us | "
              "records/s that this CPU allows on idle cores |")
        print("|---|---|---|---|---|")
        for (label, n), r in rates.items():
            c = cpus[(label, n)]
            print(f"| {label} | {n} | {min(r):,.0f} / {statistics.median(r):,.0f} / {max(r):,.0f} | "
                  f"{min(c):.0f}-{max(c):.0f} | {_cores(n) * 1e6 / max(c):,.0f}-{_cores(n) * 1e6 / min(c):,.0f} |")
        print("target: 20,000 records/s with 2 workers (goal 25,000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
