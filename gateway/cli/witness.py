"""``gateway witness ...``: what this server's witness has cosigned and the evidence it kept (I/O shell;
docs/witness.md section 1; the handlers are in :mod:`gateway.cli.commands.witness`).

Both read the witness's tables in ``[server] database_url``; the server need not run.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gateway.cli.common import command, handlers

if TYPE_CHECKING:
    from gateway.cli.common import SubParsers

_handler = handlers("gateway.cli.commands.witness")


def register(subparsers: SubParsers) -> None:
    p = subparsers.add_parser("witness", help="the witness: logs cosigned, evidence of forks")
    p.add_argument("-c", "--config", default=argparse.SUPPRESS, help="settings file (TOML)")
    sub = p.add_subparsers(dest="witness_command", metavar="COMMAND", required=True)
    q = command(sub, "logs", _handler("cmd_logs"), "each log witnessed: size, root hash, last cosigned",
                description="each log witnessed: size, root hash, last cosigned")
    q.add_argument("--json", action="store_true")
    q = command(sub, "evidence", _handler("cmd_evidence"),
                "refused checkpoints that show a fork or an inconsistent history (exit code 1 if any)",
                description="refused checkpoints that show a fork or an inconsistent history, newest first, with "
                            "both signed notes (exit code 1 if any)")
    q.add_argument("--origin", help="only this checkpoint origin")
    q.add_argument("--limit", type=int, default=100, help="at most this many (default 100, at most 1000)")
    q.add_argument("--offset", type=int, default=0)
    q.add_argument("--json", action="store_true", help="the whole evidence as JSON (notes and proofs included)")
