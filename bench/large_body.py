"""Large bodies through both security servers, as real processes: RSS growth per server and MB/s (issue 10,
item 6). Prints one line per run; each run sends a request body of ``--size`` bytes (chunked) and gets a
response of as many bytes back, through ss1 and ss2 (``gateway server serve``), with ``max_body_bytes`` at twice
``--size`` and a body budget of 8 MiB. Peak RSS growth is each server process's VmHWM after ``clear_refs`` 5.

    .venv/bin/python bench/large_body.py --size 1073741824 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# the test kits, and not this directory (its adapters.py would hide the adapters package)
sys.path[:] = [str(_HERE.parent / "tests" / "e2e"), str(_HERE.parent / "tests"),
               *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

from large_body_kit import HashingService, body_sha256, large_body_federation, send  # noqa: E402


async def main(size: int, runs: int, body_logging: bool) -> int:
    expected = body_sha256(size)
    service = await HashingService().start()
    failed = 0
    try:
        with tempfile.TemporaryDirectory(prefix="large-body-") as tmp:
            async with large_body_federation(Path(tmp), service, max_body_bytes=2 * size,
                                             body_logging=body_logging) as running:
                for run in range(1, runs + 1):
                    sent = await send(running, request_size=size, response_size=size)
                    ok = sent.status == 200 and sent.service_saw == expected and sent.response_sha256 == expected
                    failed += not ok
                    rate = 2 * size / sent.seconds / 1e6
                    growth = "  ".join(f"{code} +{g / 2**20:.1f} MiB" for code, g in sorted(sent.rss_growth.items()))
                    print(f"run {run}: {size / 2**20:.0f} MiB each way, body_logging={body_logging}: "
                          f"{sent.seconds:.1f} s, {rate:.0f} MB/s (both bodies), peak RSS growth {growth}"
                          f"{'' if ok else '  FAILED: status ' + str(sent.status)}", flush=True)
    finally:
        await service.close()
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2**30, help="bytes of each body (default 1 GiB)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-body-logging", action="store_true", help="log digests only")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.size, args.runs, not args.no_body_logging)))
