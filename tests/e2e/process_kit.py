"""Shared pieces of the tests that run security servers as real ``gateway server serve`` processes.

- :func:`serve_process`: start one, yield it with the line it prints once it listens, stop it (if alive) after;
- :func:`worker_pids`: the worker processes of a supervisor (``[server] workers`` > 1), by index, from /proc;
- :func:`wait_until`: wait for a condition on another process (its database, its children) with a timeout:
  there is nothing to await across processes, so the condition is polled;
- :func:`exchange`: one r1 exchange through a consumer's client port; the request id when it was acknowledged;
- :func:`logged`: every record of some origins of a database, by request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
from waiting import wait_for_condition

from gateway.messagelog.store import SqlMessageLogStore
from gateway.storage.db import make_engine

GATEWAY = Path(sys.executable).parent / "gateway"
PERSONS = "DEV/GOV/1002/registry/persons"
CONSUMER = "DEV/GOV/1001/consumer"
START_TIMEOUT = 90  # seconds for a server process (all its workers) to come up


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the test runner's GATEWAY_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def serve_process(
    settings: Path, log: Path, *, env: dict[str, str] | None = None,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``gateway server serve``, yielded with its "security server ..." line; SIGTERM and wait after."""
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            str(GATEWAY), "-c", str(settings), "server", "serve", stdout=asyncio.subprocess.PIPE, stderr=err,
            env=env or clean_env(),
        )
    assert proc.stdout is not None
    drain: asyncio.Task[bytes] | None = None
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while line := (await proc.stdout.readline()).decode():
                if line.startswith("security server "):
                    break
            else:
                raise AssertionError(f"{settings.name} exited before listening; see {log}: {log.read_text()[-3000:]}")
        drain = asyncio.create_task(proc.stdout.read())  # keep the pipe from filling up
        yield proc, line.strip()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
        if drain is not None:
            await drain


def worker_pids(supervisor: int) -> dict[int, int]:
    """``{worker index: pid}`` of the live workers of ``supervisor`` (from /proc: children, command lines)."""
    out: dict[int, int] = {}
    try:
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    except OSError:
        return out
    for pid in map(int, children):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"--worker" in argv and state != "Z":
            out[int(argv[argv.index(b"--worker") + 1])] = pid
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def wait_until(condition: Callable[[], Awaitable[bool] | bool], *, timeout: float, what: str) -> None:
    """Return once ``condition()`` is true; fail after ``timeout`` seconds saying ``what`` did not happen."""
    await wait_for_condition(condition, timeout=timeout, what=what)


async def exchange(session: aiohttp.ClientSession, client_url: str) -> str | None:
    """One r1 GET through a consumer's client port: the request id if it was acknowledged (200), else None."""
    try:
        async with session.get(f"{client_url}/r1/{PERSONS}/?limit=1", headers={"X-Road-Client": CONSUMER}) as resp:
            await resp.read()
            if resp.status == 200 and resp.headers.get("X-Road-Service") == PERSONS:
                return resp.headers["X-Road-Request-Id"]
    except aiohttp.ClientError:
        pass
    return None


async def logged(database_url: str, origins: list[str]) -> dict[str, dict[str, list[str]]]:
    """``{origin: {request id: [kinds]}}`` of every record of ``origins`` in the database."""
    engine = make_engine(database_url)
    store = SqlMessageLogStore(engine)
    out: dict[str, dict[str, list[str]]] = {}
    try:
        for origin in origins:
            mine = out.setdefault(origin, {})
            size = await store.size(origin)
            for start in range(0, size, 1000):
                for stored in await store.read(origin, start=start, limit=1000):
                    r = stored.decode()
                    mine.setdefault(r.request_id, []).append(r.kind)
    finally:
        await store.close()
        await engine.dispose()
    return out


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``gateway ARGS``: exit code, standard output and standard error."""
    proc = await asyncio.create_subprocess_exec(
        str(GATEWAY), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env or clean_env(),
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def checkpointed(database_url: str, origins: list[str]) -> bool:
    """Whether every record of each of ``origins`` is covered by a timestamped checkpoint, none unstamped."""
    engine = make_engine(database_url)
    store = SqlMessageLogStore(engine)
    try:
        for origin in origins:
            cp = await store.latest_checkpoint(origin, stamped_only=True)
            if cp is None or cp.size < await store.size(origin):
                return False
            if await store.checkpoints(origin, unstamped_only=True, limit=1):  # older ones caught up too
                return False
        return True
    finally:
        await store.close()
        await engine.dispose()
