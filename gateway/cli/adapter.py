"""``gateway adapter ...``: run the service adapters, write the demo registries (I/O shell).

- ``gateway adapter serve --config FILE [--host H] [--port P]`` serves the adapters that FILE (TOML, see
  ``docs/adapters.md``) describes until SIGINT or SIGTERM, then stops cleanly (exit 0).
- ``gateway adapter demo-data --out DIR [--seed N]`` writes the demo registries and an adapters file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from adapters.config import load_config
from adapters.demo_data import DEFAULT_COMPANIES, DEFAULT_PERSONS, DEFAULT_SEED, write_demo_data
from adapters.server import start_adapters
from gateway.cli.run import stop_on_signal


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("adapter", help="service adapters (SQL, file, pass-through)")
    sub = parser.add_subparsers(dest="adapter_command", metavar="SUBCOMMAND", required=True)

    serve = sub.add_parser("serve", help="serve the adapters described by a TOML file")
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
    serve.set_defaults(handler=_serve)

    demo = sub.add_parser("demo-data", help="write deterministic demo registries (SQLite + CSV)")
    demo.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    demo.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"RNG seed (default {DEFAULT_SEED})")
    demo.add_argument("--persons", type=int, default=DEFAULT_PERSONS, help="number of persons")
    demo.add_argument("--companies", type=int, default=DEFAULT_COMPANIES, help="number of companies")
    demo.set_defaults(handler=_demo_data)


def _serve(args: argparse.Namespace) -> int:
    """Raises: ConfigError: a bad settings file, an adapter that cannot start, an address in use."""
    config = load_config(args.adapters_config, os.environ)
    return asyncio.run(_serve_until_signal(config, args.host, args.port))


async def _serve_until_signal(config: Any, host: str | None, port: int | None) -> int:
    with stop_on_signal() as stop:
        running = await start_adapters(config, host, port)
        try:
            print(f"adapters listening on {running.base_url}", flush=True)
            for name, url in running.urls.items():
                print(f"  {name}: {url}/", flush=True)
            await stop.wait()
            print("stopping", file=sys.stderr, flush=True)
        finally:
            await running.close()
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    """Raises: ConfigError: bad counts or an unwritable directory."""
    paths = write_demo_data(args.out, seed=args.seed, persons=args.persons, companies=args.companies)
    print(f"database: {paths.database}")
    print(f"persons:  {paths.persons_csv}")
    print(f"companies: {paths.companies_csv}")
    print(f"adapters: {paths.config}  (gateway adapter serve --config {paths.config})")
    return 0
