"""What checking a citizen's evidence costs per item: ``gateway log verify-usage``'s check
(:func:`gateway.transparency.evidence.verify_file`) over an evidence file of real ``findUsage`` items.

    .venv/bin/python bench/verify_usage.py [--items 200] [--checkpoint-every 50] [--repeat 3] [--json FILE]

A demo federation runs in this process (SQLite, signing and logging on). ``--items`` exchanges about one subject
go from the consumer to the registry, with a forced, timestamped checkpoint of both servers after every
``--checkpoint-every`` of them (so the items fall under a few checkpoints, as they do on a server that
checkpoints every few seconds); then ``findUsage`` of the registry, page by page, gives one item per exchange
(its disclosure record, with its evidence), written as the portal writes its evidence file. The file is then
checked ``--repeat`` times against the anchor, each time from scratch (a new process's first check), and the
time per item printed (wall clock and CPU of this process). The bench asserts only that every item is proven,
and is never part of the test run.
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
from gateway.globalconf.anchor import Anchor  # noqa: E402
from gateway.transparency.evidence import verify_file  # noqa: E402

CONSUMER = "DEV/GOV/1001/consumer"
REGISTRY = "DEV/GOV/1002/registry"
SUBJECT = "EE38001085718"
CENTRAL = {"transparency_purposes": ("TAX=Tax assessment",), "transparency_portal": CONSUMER}
PAGE = 100


async def evidence(workdir: Path, items: int, every: int) -> tuple[bytes, Path]:
    """The evidence file of ``items`` findUsage items, and the federation's anchor file (copied out)."""
    fed = await start_federation(workdir / "fed", central_overrides=CENTRAL)
    try:
        ss1, ss2 = fed.server("ss1"), fed.server("ss2")
        url = ss1.client_url
        async with aiohttp.ClientSession() as http:
            sent = 0

            async def exchange() -> None:
                headers = {"X-Road-Client": CONSUMER, "X-Road-Id": str(uuid.uuid4()),
                           "X-Road-Data-Subject": SUBJECT, "X-Road-Purpose": "TAX"}
                async with http.get(f"{url}/r1/{REGISTRY}/persons/?limit=1", headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}")

            while sent < items:
                n = min(every, items - sent)
                await asyncio.gather(*(exchange() for _ in range(n)))
                sent += n
                for ss in (ss1, ss2):
                    assert ss.checkpointer is not None
                    await ss.checkpointer.run_once(ss.clock(), force=True)
            usages: list[dict[str, Any]] = []
            while len(usages) < items:
                body = {"userCode": SUBJECT, "offset": len(usages), "limit": PAGE}
                async with http.post(f"{url}/r1/{REGISTRY}/findUsage", json=body,
                                     headers={"X-Road-Client": CONSUMER}) as resp:
                    doc = json.loads(await resp.read())
                if not doc["usages"]:
                    break
                usages.extend(doc["usages"])
        anchor = workdir / "anchor.json"
        anchor.write_bytes(fed.anchor_path.read_bytes())
    finally:
        await fed.close()
    data = json.dumps({"subject": SUBJECT, "generated": "2026-12-03T00:00:00Z", "entries": usages}).encode()
    return data, anchor


def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-verify-usage-") as tmp:
        data, anchor_path = asyncio.run(evidence(Path(tmp), args.items, args.checkpoint_every))
        anchor = Anchor.from_file(anchor_path)
    n = len(json.loads(data)["entries"])
    runs = []
    for r in range(args.repeat):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        _, verdicts = verify_file(data, anchor)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        bad = [(i, v.problems) for i, v in verdicts if not v.proven]
        if bad:
            raise SystemExit(f"items not proven: {bad[:3]}")
        runs.append({"wall_ms": wall / n * 1000, "cpu_ms": cpu / n * 1000})
        print(f"run {r + 1}: {n} items, {wall * 1000:.0f} ms: {runs[-1]['wall_ms']:.2f} ms per item "
              f"(cpu {runs[-1]['cpu_ms']:.2f} ms)", flush=True)
    med = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
    print(f"median: {med['wall_ms']:.2f} ms per item (cpu {med['cpu_ms']:.2f} ms), {n} items, "
          f"{args.items // args.checkpoint_every + (args.items % args.checkpoint_every > 0)} checkpoints")
    return {"items": n, "runs": runs, "median": med}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    out = main(a)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
