"""What the transparency records cost per exchange: the same exchange with and without transparency headers,
alternated (A B A B ...), through a demo federation in this process.

    .venv/bin/python bench/transparency.py [--rounds 4] [--exchanges 300] [--concurrency 8] [--json FILE]

Both security servers (message log in SQLite, signing and logging on), the central server, the PKI and the demo
adapters run in this process, on one event loop: a figure is the cost of both servers together. Variant ``plain``
sends an ordinary request; ``subject`` adds ``X-Road-Data-Subject`` (two subjects), ``X-Road-Purpose`` and
``X-Road-Legal-Basis``, so that each server writes a usage record and two index rows. Each turn runs
``--exchanges`` requests with ``--concurrency`` in flight, after a warm-up; printed per turn: exchanges/s, p50
and p99 latency, CPU time of this process per exchange. Then the medians per variant and their difference.
The bench asserts nothing and is never part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from gateway.dev.demo import start_federation  # noqa: E402

CENTRAL = {"transparency_purposes": ("TAX=Tax assessment",), "transparency_portal": "DEV/GOV/1001/consumer"}
TARGET = "/r1/DEV/GOV/1002/registry/persons/?limit=1"
VARIANTS = {
    "plain": {},
    "subject": {
        "X-Road-Data-Subject": "EE38001085718, EE49002124277",
        "X-Road-Purpose": "TAX",
        "X-Road-Legal-Basis": "Taxation Act s. 12",
    },
}


async def turn(
    http: aiohttp.ClientSession,
    url: str,
    extra: dict[str, str],
    n: int,
    concurrency: int,
) -> dict[str, float]:
    latencies: list[float] = []
    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            headers = {"X-Road-Client": "DEV/GOV/1001/consumer", "X-Road-Id": str(uuid.uuid4()), **extra}
            t0 = time.perf_counter()
            async with http.get(url + TARGET, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}")
            latencies.append(time.perf_counter() - t0)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    latencies.sort()
    return {
        "rate": n / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "cpu_ms": cpu / n * 1000,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-transparency-") as tmp:
        fed = await start_federation(Path(tmp) / "fed", central_overrides=CENTRAL)
        try:
            url = fed.server("ss1").client_url
            results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency)) as http:
                for extra in VARIANTS.values():  # warm-up: connections, caches, the first checkpoint
                    await turn(http, url, extra, 50, args.concurrency)
                for r in range(args.rounds):
                    for name, extra in VARIANTS.items():
                        m = await turn(http, url, extra, args.exchanges, args.concurrency)
                        results[name].append(m)
                        print(
                            f"round {r + 1} {name:8s} {m['rate']:7.0f}/s p50 {m['p50_ms']:6.2f} ms "
                            f"p99 {m['p99_ms']:6.2f} ms cpu {m['cpu_ms']:5.2f} ms/exchange",
                            flush=True,
                        )
        finally:
            await fed.close()
    med = {name: {k: statistics.median(m[k] for m in ms) for k in ms[0]} for name, ms in results.items()}
    for name, m in med.items():
        print(
            f"median {name:8s} {m['rate']:7.0f}/s p50 {m['p50_ms']:6.2f} ms p99 {m['p99_ms']:6.2f} ms "
            f"cpu {m['cpu_ms']:5.2f} ms/exchange"
        )
    extra_cpu = med["subject"]["cpu_ms"] - med["plain"]["cpu_ms"]
    extra_p50 = med["subject"]["p50_ms"] - med["plain"]["p50_ms"]
    print(
        f"extra per exchange with transparency records (both servers): cpu {extra_cpu:+.2f} ms, p50 {extra_p50:+.2f} ms"
    )
    return {"rounds": results, "median": med}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--exchanges", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    out = asyncio.run(main(a))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
