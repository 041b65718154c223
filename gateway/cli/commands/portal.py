"""The handler of ``gateway portal serve`` (I/O shell; the parser is :mod:`gateway.cli.portal`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from gateway.cli.common import settings_from_args
from gateway.cli.run import run, stop_on_signal
from gateway.errors import ConfigError
from gateway.globalconf.updater import GlobalConfUpdater
from gateway.portal.app import Portal, start_portal
from gateway.portal.usage import anchor_verifier
from gateway.sdnotify import notify
from gateway.settings import Settings


def cmd_serve(args: argparse.Namespace) -> int:
    """Raises: ConfigError: bad settings, no global configuration, the address in use."""
    return run(_serve(settings_from_args(args), args.host, args.port))


async def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    with stop_on_signal() as stop:
        updater = GlobalConfUpdater.from_settings(settings.globalconf)
        try:
            updater.load_cached()
            await updater.refresh()
            if updater.current is None:
                raise ConfigError(
                    "the portal has no global configuration: none cached and none downloaded",
                    hint="check [globalconf] anchor and that the central server is reachable",
                )
            poll = asyncio.create_task(updater.run(stop))
            running = await start_portal(
                Portal(settings=settings.portal, globalconf=updater.require_valid,
                       verify=anchor_verifier(updater.anchor)),
                host=host, port=port,
            )
            try:
                print(f"portal listening on {running.url}", flush=True)
                notify("READY=1")
                await stop.wait()
                notify("STOPPING=1")
                print("stopping", file=sys.stderr, flush=True)
            finally:
                await running.close()
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poll
        finally:
            await updater.close()
    return 0
