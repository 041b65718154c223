"""``gateway adapter ...``: run the service adapters, write the demo registries (I/O shell; this module is
the parser, the handlers are in :mod:`gateway.cli.commands.adapter`).

- ``gateway adapter serve --config FILE [--host H] [--port P]`` serves the adapters that FILE (TOML, see
  ``docs/adapters.md``) describes until SIGINT or SIGTERM, then stops cleanly (exit 0).
- ``gateway adapter demo-data --out DIR [--seed N]`` writes the demo registries and an adapters file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.cli.choices import DEMO_COMPANIES, DEMO_PERSONS, DEMO_SEED
from gateway.cli.common import command, handlers

if TYPE_CHECKING:
    from gateway.cli.common import SubParsers

_handler = handlers("gateway.cli.commands.adapter")


def register(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser("adapter", help="service adapters (SQL, file, pass-through)")
    sub = parser.add_subparsers(dest="adapter_command", metavar="SUBCOMMAND", required=True)

    serve = command(sub, "serve", _handler("cmd_serve"), "serve the adapters described by a TOML file")
    # Its own dest: the top-level --config names the gateway settings file, this one the adapters file.
    serve.add_argument(
        "--config",
        dest="adapters_config",
        required=True,
        metavar="FILE",
        help="adapters settings (TOML); see config/adapters.example.toml",
    )
    serve.add_argument("--host", help="listen address (overrides [server] host)")
    serve.add_argument("--port", type=int, help="listen port, 0 for any free one (overrides [server] port)")

    demo = command(sub, "demo-data", _handler("cmd_demo_data"), "write deterministic demo registries (SQLite + CSV)")
    demo.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    demo.add_argument("--seed", type=int, default=DEMO_SEED, help=f"RNG seed (default {DEMO_SEED})")
    demo.add_argument("--persons", type=int, default=DEMO_PERSONS, help="number of persons")
    demo.add_argument("--companies", type=int, default=DEMO_COMPANIES, help="number of companies")

