"""``gateway demo`` as a real process for the tests: start it, wait for its banner (printed once
``federation.json`` is in place), yield it with its description, stop it with SIGINT after."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from process_kit import GATEWAY, clean_env

START_TIMEOUT = 90  # seconds until the banner; a few on an idle machine, more with --processes
STOP_TIMEOUT = 30  # seconds from SIGINT to exit


@dataclass
class Demo:
    proc: asyncio.subprocess.Process
    banner: str
    desc: dict[str, Any]
    stderr: Path

    def server(self, code: str) -> dict[str, Any]:
        return next(s for s in self.desc["servers"] if s["id"].endswith(f"/{code}"))


async def read_banner(stream: asyncio.StreamReader) -> str:
    """stdout up to the banner's request line (the line with ``/r1/``)."""
    out = []
    while line := (await stream.readline()).decode():
        out.append(line)
        if "/r1/" in line:
            return "".join(out)
    raise AssertionError(f"gateway demo closed stdout before its banner: {''.join(out)!r}")


@contextlib.asynccontextmanager
async def demo_process(cwd: Path, *args: str, umask: int | None = None) -> AsyncIterator[Demo]:
    """``gateway demo --dir demo ARGS`` in ``cwd`` (under ``umask`` if given, set by a shell before exec)."""
    argv = [str(GATEWAY), "demo", "--dir", str(cwd / "demo"), "--out", str(cwd / "federation.json"), *args]
    if umask is not None:
        argv = ["sh", "-c", f"umask {umask:03o} && exec {shlex.join(argv)}"]
    stderr = cwd / "demo-stderr.log"
    with stderr.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
        )
    assert proc.stdout is not None
    drain: asyncio.Task[bytes] | None = None
    try:
        try:
            banner = await asyncio.wait_for(read_banner(proc.stdout), START_TIMEOUT)
        except AssertionError as e:
            raise AssertionError(f"{e}; stderr: {stderr.read_text()[-3000:]}") from None
        drain = asyncio.create_task(proc.stdout.read())
        yield Demo(proc=proc, banner=banner, desc=json.loads((cwd / "federation.json").read_text()), stderr=stderr)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            await drain
