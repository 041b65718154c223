"""``gateway portal ...``: the citizen portal (I/O shell; this module is the parser, the handler is in
:mod:`gateway.cli.commands.portal`).

- ``gateway portal serve [--host H] [--port P]`` serves the portal of ``[portal]`` (docs/portal.md) until
  SIGINT or SIGTERM; it reads the global configuration as ``[globalconf]`` says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.cli.common import command, handlers

if TYPE_CHECKING:
    from gateway.cli.common import SubParsers

_handler = handlers("gateway.cli.commands.portal")


def register(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser("portal", help="the citizen portal (who used my data, with proofs)")
    sub = parser.add_subparsers(dest="portal_command", metavar="SUBCOMMAND", required=True)
    serve = command(sub, "serve", _handler("cmd_serve"), "serve the citizen portal of [portal]")
    serve.add_argument("--host", help="listen address (overrides [portal] host)")
    serve.add_argument("--port", type=int, help="listen port, 0 for any free one (overrides [portal] port)")
