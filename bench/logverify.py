"""Benchmark: ``gateway log verify`` speed on a large archive, in records per second.

Builds an archive of ``--records`` (default 100 000) synthetic but properly signed records: exchanges signed
with RFC 9421 by two members' keys from a development CA, stapled OCSP responses, a global configuration
signed under an anchor, and real checkpoints (C2SP signed notes with RFC 3161 timestamp tokens) every
``--checkpoint-every`` records. Then verifies it with the same code as the CLI (``verify_archive`` with a
process pool of ``--workers``, default one per CPU) and prints the figures.

    .venv/bin/python bench/logverify.py [--records 100000] [--workers N] [--keep DIR]

Target (issue): at least 20 000 records/s. ECDSA P-256 verification alone costs about 70 us of one core
(``openssl speed ecdsap256``), so the rate scales with the number of cores; the figure printed includes the
cores used so that it can be compared across machines.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from archive_kit import make_log, make_world, write_archive

from gateway.messagelog.archive import LogArchive
from gateway.messagelog.verify import ProcessPoolRunner, serial_runner, verify_archive


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--checkpoint-every", type=int, default=25_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--serial-sample", type=int, default=10_000, help="records for the single-process figure")
    ap.add_argument("--keep", help="write the archive into this directory and keep it")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.keep) if args.keep else Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        # (1) build
        t0 = time.perf_counter()
        world = make_world(d)
        records = make_log(world, (args.records + 1) // 2, per_second=50)
        sizes = [*range(args.checkpoint_every, len(records), args.checkpoint_every), len(records)]
        path = write_archive(world, d / "bench.zip", records, checkpoint_sizes=sizes)
        sample = write_archive(world, d / "sample.zip", records[:args.serial_sample])
        built = time.perf_counter() - t0
        size_mb = path.stat().st_size / 2**20
        print(f"built {len(records)} records, {len(sizes)} checkpoints, {size_mb:.0f} MiB in {built:.1f} s")
        del records
        # (2) verify, as `gateway log verify` does
        with LogArchive(path) as archive:
            t0 = time.perf_counter()
            report = verify_archive(archive, world.anchor, runner=ProcessPoolRunner(args.workers))
            elapsed = time.perf_counter() - t0
        if not report.ok:
            print(report.summary())
            return 1
        n = report.records_read
        print(f"verify: {n} records in {elapsed:.2f} s = {n / elapsed:,.0f} records/s "
              f"({args.workers} worker processes on {os.cpu_count()} CPUs)")
        # (3) one process, for the per-core cost
        with LogArchive(sample) as archive:
            t0 = time.perf_counter()
            report = verify_archive(archive, world.anchor, runner=serial_runner)
            elapsed = time.perf_counter() - t0
        assert report.ok, report.summary()
        n = report.records_read
        print(f"verify, one process: {n} records in {elapsed:.2f} s = {n / elapsed:,.0f} records/s "
              f"({elapsed / n * 1e6:.0f} us per record)")
        print("target: 20,000 records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
