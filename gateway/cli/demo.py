"""``gateway demo``: a whole federation on loopback until Ctrl-C (I/O shell)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from gateway.cli.run import wait_for_signal
from gateway.demo import print_banner, start_federation


async def _run(workdir: Path, out_file: Path) -> int:
    fed = await start_federation(workdir)
    try:
        tmp = out_file.with_name(f".{out_file.name}.tmp")
        tmp.write_text(json.dumps(fed.describe(), indent=2) + "\n")
        os.replace(tmp, out_file)
        print_banner(fed, out_file)
        print(flush=True)
        await wait_for_signal()
        print("stopping...", flush=True)
    finally:
        await fed.close()
    print("stopped.", flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    workdir = Path(args.dir)
    out = Path(args.out) if args.out else Path.cwd() / "federation.json"
    return asyncio.run(_run(workdir, out.resolve()))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo", help="run a complete federation on loopback (central server, PKI, 2 security servers, adapters)",
    )
    p.add_argument("--dir", default="demo", help="state directory, wiped at start (default: ./demo)")
    p.add_argument("--out", help="where to write federation.json (default: ./federation.json)")
    p.set_defaults(handler=cmd_demo)
