"""``gateway central registration ...``: the registration officer's commands (I/O shell).

``list`` shows management requests (``--state submitted`` for the queue), ``approve ID`` applies one to the
registry (visible in the next global configuration), ``reject ID`` refuses it. docs/registration.md.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.central import registration
from gateway.settings import CentralSettings


def _officer(args: argparse.Namespace) -> str:
    return str(args.officer or getpass.getuser())


def cmd_list(args: argparse.Namespace) -> int:
    from gateway.cli.central import _run

    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        records = await registration.list_requests(engine, state=args.state)
        if args.json:
            json.dump([r.to_dict() for r in records], sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        for r in records:
            what = r.client or (r.auth_cert_sha256 or "")[:16]
            print(f"{r.id:>5}  {r.state:<9} {r.type:<18} {r.server:<30} {what}"
                  f"{'  ' + r.address if r.address else ''}  {r.created_at.isoformat()}")
        if not records:
            print("no registration requests")
        return 0

    return _run(args, body)


def cmd_approve(args: argparse.Namespace) -> int:
    from gateway.cli.central import _run

    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        r = await registration.approve(engine, args.id, instance=central.instance, officer=_officer(args),
                                       now=datetime.now(UTC), comment=args.comment)
        print(f"request {r.id} ({r.type} for {r.server}) approved; it is in the next global configuration")
        return 0

    return _run(args, body)


def cmd_reject(args: argparse.Namespace) -> int:
    from gateway.cli.central import _run

    async def body(engine: AsyncEngine, central: CentralSettings) -> int:
        r = await registration.reject(engine, args.id, officer=_officer(args), now=datetime.now(UTC),
                                      comment=args.comment)
        print(f"request {r.id} ({r.type} for {r.server}) rejected")
        return 0

    return _run(args, body)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``registration list|approve|reject`` under ``gateway central``."""
    p = sub.add_parser("registration", help="registration requests from security servers",
                       description="registration requests from security servers")
    g = p.add_subparsers(dest="registration_command", metavar="ACTION", required=True)
    q = g.add_parser("list", help="list requests, oldest first")
    q.add_argument("--state", choices=("submitted", "approved", "rejected"))
    q.add_argument("--json", action="store_true")
    q.set_defaults(handler=cmd_list)
    for name, handler, help in (("approve", cmd_approve, "approve a request and apply it to the registry"),
                                ("reject", cmd_reject, "reject a request")):
        q = g.add_parser(name, help=help, description=help)
        q.add_argument("id", metavar="ID", type=int)
        q.add_argument("--officer", help="who decides (default: the login name)")
        q.add_argument("--comment", help="a note kept with the decision")
        q.set_defaults(handler=handler)
