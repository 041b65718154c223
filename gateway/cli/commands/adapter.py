"""The handlers of ``gateway adapter ...``: run the service adapters, write the demo registries (I/O shell;
the parser is :mod:`gateway.cli.adapter`).

- ``gateway adapter serve --config FILE [--host H] [--port P]`` serves the adapters that FILE (TOML, see
  ``docs/adapters.md``) describes until SIGINT or SIGTERM, then stops cleanly (exit 0).
- ``gateway adapter demo-data --out DIR [--seed N]`` writes the demo registries and an adapters file.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from adapters.config import load_config
from adapters.demo_data import write_demo_data
from adapters.server import start_adapters
from gateway.cli.run import run, stop_on_signal
from gateway.sdnotify import notify


def cmd_serve(args: argparse.Namespace) -> int:
    """Raises: ConfigError: a bad settings file, an adapter that cannot start, an address in use."""
    config = load_config(args.adapters_config, os.environ)
    return run(_serve_until_signal(config, args.host, args.port))  # on uvloop, as the security server


async def _serve_until_signal(config: Any, host: str | None, port: int | None) -> int:
    with stop_on_signal() as stop:
        running = await start_adapters(config, host, port)
        try:
            print(f"adapters listening on {running.base_url}", flush=True)
            for name, url in running.urls.items():
                print(f"  {name}: {url}/", flush=True)
            notify("READY=1")  # Type=notify units (deploy/systemd/)
            await stop.wait()
            notify("STOPPING=1")
            print("stopping", file=sys.stderr, flush=True)
        finally:
            await running.close()
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    """Raises: ConfigError: bad counts or an unwritable directory."""
    paths = write_demo_data(args.out, seed=args.seed, persons=args.persons, companies=args.companies)
    print(f"database: {paths.database}")
    print(f"persons:  {paths.persons_csv}")
    print(f"companies: {paths.companies_csv}")
    print(f"adapters: {paths.config}  (gateway adapter serve --config {paths.config})")
    return 0
