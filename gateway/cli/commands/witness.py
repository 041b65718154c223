"""The handlers of ``gateway witness ...`` (I/O shell; docs/witness.md section 1; the parser is
:mod:`gateway.cli.witness`)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from collections.abc import Awaitable, Callable

from gateway.cli.common import database_setting, settings_from_args
from gateway.errors import RequestError
from gateway.storage.db import open_database
from gateway.witness.state import MAX_PAGE, WitnessStore


def _run(args: argparse.Namespace, body: Callable[[WitnessStore], Awaitable[int]]) -> int:
    settings = settings_from_args(args)

    async def main() -> int:
        engine = await open_database(settings.server.database_url, where=database_setting(args, "server"))
        try:
            store = WitnessStore(engine)
            await store.migrate()
            return await body(store)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def cmd_logs(args: argparse.Namespace) -> int:
    async def body(store: WitnessStore) -> int:
        logs = await store.logs()
        if args.json:
            json.dump([{"origin": s.origin, "size": s.size, "root_hash": base64.b64encode(s.root_hash).decode(),
                        "updated_at": s.updated_at.isoformat().replace("+00:00", "Z")} for s in logs],
                      sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        if not logs:
            print("no log cosigned yet")
        for s in logs:
            print(f"{s.origin}  size {s.size}  root {base64.b64encode(s.root_hash).decode()}  "
                  f"cosigned {s.updated_at.isoformat()}")
        return 0

    return _run(args, body)


def cmd_evidence(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= MAX_PAGE or args.offset < 0:
        raise RequestError(f"--limit must be 1..{MAX_PAGE} and --offset at least 0")

    async def body(store: WitnessStore) -> int:
        rows, total = await store.evidence(origin=args.origin, limit=args.limit, offset=args.offset)
        if args.json:
            json.dump({"total": total, "evidence": [r.to_dict() for r in rows]}, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            if not total:
                print("no evidence kept")
            for r in rows:
                e = r.evidence
                print(f"#{r.id} {e.recorded_at.isoformat()} {e.reason} {e.origin} from {e.peer}: {e.message}")
            if total > len(rows):
                print(f"({total} in all; --offset/--limit for more, --json for the signed notes)")
        return 1 if total else 0

    return _run(args, body)
