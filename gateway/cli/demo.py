"""``gateway demo``: a whole federation on loopback until Ctrl-C (I/O shell; the parser, the handler is in
:mod:`gateway.cli.commands.demo`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.cli.common import command, handlers

if TYPE_CHECKING:
    from gateway.cli.common import SubParsers

_handler = handlers("gateway.cli.commands.demo")


def register(subparsers: SubParsers) -> None:
    p = command(subparsers, "demo", _handler("cmd_demo"),
                "run a complete federation on loopback (central server, PKI, 2 security servers, adapters)")
    p.add_argument("--dir", default="demo", help="state directory, wiped at start (default: ./demo)")
    p.add_argument("--out", help="where to write federation.json (default: ./federation.json)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a [server] setting for every security server, e.g. ocsp_refresh_seconds=5 (repeatable)")
    p.add_argument("--processes", action="store_true",
                   help="run each part (PKI, central server, each security server, adapters) as a process of its "
                        "own; their PIDs and commands go into federation.json")
