"""The handler of ``gateway demo``: a whole federation on loopback until Ctrl-C (I/O shell; the parser is
:mod:`gateway.cli.demo`)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from gateway.cli.run import run, stop_on_signal
from gateway.dev.demo import print_banner, start_federation
from gateway.errors import ConfigError
from gateway.settings import load_settings

# [server] keys the demo sets itself for each server; --set may not change them
_DEMO_KEYS = frozenset({"id", "database_url", "state_dir", "address", "client_port", "client_https_port",
                        "server_port", "token_dir", "token_pin_file", "token_pin_env"})


def server_overrides(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs of ``--set`` as ``[server]`` settings, typed and checked like the environment's.

    Raises:
        ConfigError: not ``KEY=VALUE``, an unknown key or a bad value, or a key the demo sets itself.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. ocsp_refresh_seconds=5")
        if key in _DEMO_KEYS:
            raise ConfigError(f"--set {key}: the demo sets [server] {key} itself for each server")
        try:
            loaded = load_settings(None, {f"GATEWAY_SERVER__{key.upper()}": value})
        except ConfigError as e:
            message = e.message.removeprefix("environment (GATEWAY_SECTION__KEY) [server]: ")
            raise ConfigError(f"--set {pair!r}: {message}", hint=e.hint) from e
        out[key] = getattr(loaded.server, key)
    return out


async def _run(workdir: Path, out_file: Path, overrides: dict[str, Any], *, processes: bool) -> int:
    # The signal handlers first: a Ctrl-C once the banner is out (or during start-up) stops everything cleanly.
    with stop_on_signal() as stop:
        fed = await start_federation(workdir, server_overrides=overrides, portal=True, witness=True,
                                     witness_policies=True)
        parts: list[Any] = []
        try:
            desc = fed.describe()
            if processes:
                from gateway.dev import processes as procs

                parts = await procs.hand_over(fed)
                desc["processes"] = procs.describe(parts)
            tmp = out_file.with_name(f".{out_file.name}.tmp")
            tmp.write_text(json.dumps(desc, indent=2) + "\n")
            os.replace(tmp, out_file)
            print_banner(fed, out_file, processes=desc["processes"])
            print(flush=True)
            await stop.wait()
            print("stopping...", flush=True)
        finally:
            if parts:
                await procs.stop_parts(parts)
            await fed.close()
    print("stopped.", flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    workdir = Path(args.dir)
    out = Path(args.out) if args.out else Path.cwd() / "federation.json"
    overrides = server_overrides(args.set or [])
    return run(_run(workdir, out.resolve(), overrides, processes=args.processes))
