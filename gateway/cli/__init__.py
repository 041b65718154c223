"""The ``gateway`` console script (I/O shell).

Each domain has a module under ``gateway.cli`` with a ``register(subparsers)`` function that adds its
subcommands; a subcommand's handler takes the parsed arguments and returns an exit code. Our own errors are
printed with their ``diagnostics()`` and mapped to their ``exit_code`` (2 for bad settings); anything else
is a bug and keeps its traceback.

Building the parser imports nothing heavy: the parser modules import only argparse-level things and name
their handlers lazily (:class:`gateway.cli.common.LazyHandler`), so ``gateway --help`` and ``gateway
SUBCOMMAND --help`` load neither SQLAlchemy, Alembic, aiohttp nor cryptography; the handlers' modules
(``gateway.cli.commands.*``) are imported when their subcommand runs.

Output into a closed pipe (``gateway central member list | head -1``) ends the command quietly: on
:class:`BrokenPipeError` standard output is pointed at ``/dev/null`` (so that the interpreter's last flush
cannot fail again) and the exit code is :data:`EXIT_BROKEN_PIPE`, 141, what a shell reports for a program
that SIGPIPE ended (128 + 13), as for ``cat`` or ``grep``; ``set -o pipefail`` scripts see it, and it
cannot be mistaken for the 1 with which ``token expiring`` or ``log verify`` report a finding.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
    "gateway.cli.portal",
    "gateway.cli.witness",
)

EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE, as a shell reports a program that SIGPIPE ended


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


# Bits always taken from the umask: what a gateway command creates without an explicit mode is the service
# user's alone (docs/operations.md, "Files and modes"); what is meant to be read by others (certificates,
# settings, the anchor) is given its mode explicitly.
UMASK_BITS = 0o077


def _run(argv: Sequence[str] | None) -> int:
    previous = os.umask(UMASK_BITS)
    os.umask(previous | UMASK_BITS)
    try:
        return _parse_and_run(argv)
    finally:
        os.umask(previous)  # a caller in the same process (the tests) keeps its own


def _parse_and_run(argv: Sequence[str] | None) -> int:
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


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            # Output waiting in the buffer (also that of --help, ended by SystemExit) meets a closed pipe
            # here rather than in the interpreter's last flush, which could only print a traceback.
            sys.stdout.flush()
    except BrokenPipeError:
        # Python's advice (library/signal.html, "Note on SIGPIPE"): point stdout at devnull, then exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
