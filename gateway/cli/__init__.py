"""The ``gateway`` console script (I/O shell).

Each domain has a module under ``gateway.cli`` with a ``register(subparsers)`` function that adds its
subcommands; a subcommand's handler takes the parsed arguments and returns an exit code. Our own errors are
printed with their ``diagnostics()`` and mapped to their ``exit_code`` (2 for bad settings); anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.cli.common import settings_from_args
from gateway.errors import GatewayError
from gateway.logs import configure_logging

# One entry per domain; each module defines register(subparsers).
COMMAND_MODULES: tuple[str, ...] = (
    "gateway.cli.central",
    "gateway.cli.adapter",
    "gateway.cli.pki",
    "gateway.cli.serverconf",
    "gateway.cli.server",
    "gateway.cli.demo",
    "gateway.cli.token",
    "gateway.cli.log",
    "gateway.cli.admin",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="X-Road-style secure data exchange: security servers, central server, PKI."
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    parser.add_argument("-c", "--config", help="settings file (TOML); see config/example.toml")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configure_logging(settings_from_args(args).logging)
        rc: int = args.handler(args)
    except GatewayError as e:
        print(f"gateway: error: {e.diagnostics()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
