"""Benchmark: ``gateway log verify`` speed on a large archive, in records per second.

Builds an archive of ``--records`` (default 100 000) synthetic but properly signed records: exchanges signed
with RFC 9421 by two members' keys from a development CA, stapled OCSP responses, a global configuration
signed under an anchor, and real checkpoints (C2SP signed notes with RFC 3161 timestamp tokens) every
``--checkpoint-every`` records. Then verifies it with the same code as the CLI (``verify_archive`` with a
process pool of ``--workers``, default one per CPU) and prints the figures.

    .venv/bin/python bench/logverify.py [--records 100000] [--workers N] [--keep DIR] [--reuse DIR]

``--keep DIR`` keeps the archive and its anchor in DIR; ``--reuse DIR`` verifies the ones kept there
instead of building new ones.

Target (issue): at least 20 000 records/s. Each record costs one ECDSA P-256 verification (70-90 us of one
core here: ``openssl speed ecdsap256`` and the ``cryptography`` binding), so the rate is bounded by
``cores / verify time`` and scales with the cores. Besides the wall-clock rate the script prints the CPU
time of all processes per record, and the rate that this CPU time allows on idle cores, which is the
figure to compare when other work shares the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from archive_kit import make_log, make_world, write_archive

from gateway.globalconf.anchor import Anchor
from gateway.messagelog.archive import LogArchive
from gateway.messagelog.verify import ProcessPoolRunner, VerifyReport, serial_runner, usable_cpus, verify_archive


def _cpu() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


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


def _verify(path: Path, anchor: Anchor, runner: object, label: str, cores: int, ecdsa_us: float) -> VerifyReport:
    with LogArchive(path) as archive:
        c0, t0 = _cpu(), time.perf_counter()
        report = verify_archive(archive, anchor, runner=runner)  # type: ignore[arg-type]
        elapsed, cpu = time.perf_counter() - t0, _cpu() - c0
    if not report.ok:
        print(report.summary())
        raise SystemExit(1)
    n = report.records_read
    print(f"{label}: {n} records in {elapsed:.2f} s = {n / elapsed:,.0f} records/s; "
          f"CPU {cpu:.2f} s = {cpu / n * 1e6:.0f} us per record ({cpu / n * 1e6 - ecdsa_us:.0f} besides the ECDSA "
          f"verification), i.e. {n / cpu * cores:,.0f} records/s on {cores} idle core(s)")
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--checkpoint-every", type=int, default=25_000)
    ap.add_argument("--workers", type=int, default=usable_cpus())
    ap.add_argument("--serial-sample", type=int, default=10_000, help="records for the single-process figure")
    ap.add_argument("--keep", help="write the archive and its anchor into this directory and keep them")
    ap.add_argument("--reuse", help="verify the archive and anchor kept in this directory by --keep")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.reuse or args.keep or tmp)
        d.mkdir(parents=True, exist_ok=True)
        path, sample, anchor_file = d / "bench.zip", d / "sample.zip", d / "anchor.json"
        if not args.reuse:
            # (1) build
            t0 = time.perf_counter()
            world = make_world(d)
            records = make_log(world, (args.records + 1) // 2, per_second=50)
            sizes = [*range(args.checkpoint_every, len(records), args.checkpoint_every), len(records)]
            write_archive(world, path, records, checkpoint_sizes=sizes)
            write_archive(world, sample, records[:args.serial_sample])
            anchor_file.write_bytes(world.anchor.to_bytes())
            print(f"built {len(records)} records, {len(sizes)} checkpoints, {path.stat().st_size / 2**20:.0f} MiB "
                  f"in {time.perf_counter() - t0:.1f} s")
            del records
        anchor = Anchor.from_bytes(anchor_file.read_bytes())
        ecdsa_us = _ecdsa_us()
        print(f"load average {os.getloadavg()[0]:.2f} on {usable_cpus()} CPUs; one ECDSA P-256 verification "
              f"costs {ecdsa_us:.0f} us of CPU here")
        # (2) verify, as `gateway log verify` does
        _verify(path, anchor, ProcessPoolRunner(args.workers), f"verify, {args.workers} worker processes",
                min(args.workers, usable_cpus()), ecdsa_us)
        # (3) one process, for the per-core cost
        _verify(sample, anchor, serial_runner, "verify, one process", 1, ecdsa_us)
        print("target: 20,000 records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
