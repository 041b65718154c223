"""The handlers of ``gateway central registration ...``: the registration officer's commands (I/O shell).

``list`` shows management requests, ``approve ID`` applies one to the registry (visible in the next global
configuration), ``reject ID`` refuses it (docs/registration.md). They run on the central server's database
like every ``gateway central`` command (:mod:`gateway.cli.commands.centraldb`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.central import registration
from gateway.cli.commands.centraldb import central_command, now
from gateway.settings import CentralSettings


def _officer(args: argparse.Namespace) -> str:
    return str(args.officer or getpass.getuser())


@central_command(audit=False)
async def cmd_list(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
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


@central_command
async def cmd_approve(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    r = await registration.approve(engine, args.id, instance=central.instance, officer=_officer(args), now=now(),
                                   comment=args.comment)
    print(f"request {r.id} ({r.type} for {r.server}) approved; it is in the next global configuration")
    return 0


@central_command
async def cmd_reject(args: argparse.Namespace, engine: AsyncEngine, central: CentralSettings) -> int:
    r = await registration.reject(engine, args.id, officer=_officer(args), now=now(), comment=args.comment)
    print(f"request {r.id} ({r.type} for {r.server}) rejected")
    return 0
