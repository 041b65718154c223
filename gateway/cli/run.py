"""Running a service until SIGINT or SIGTERM, with a clean stop (I/O shell)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

_T = TypeVar("_T")

# How long a thread may keep the GIL while another waits for it. The message log's writer thread blocks in
# SQLite (releasing the GIL) once or twice per batch and must then win the GIL back from a busy event loop:
# at CPython's default of 5 ms that wait, not the commit, was most of a log write's latency under load
# (docs/performance.md section 4).
SWITCH_INTERVAL_SECONDS = 0.0002
# The cyclic garbage collector's thresholds (gc.set_threshold): an exchange allocates thousands of container
# objects that die with it, and at CPython's default of 700 a generation-0 pass ran every few exchanges, found
# little to free and took about 8 % of a server's CPU under load; ten times the allocations between passes
# take that to under 1 % (docs/performance.md section 5).
GC_THRESHOLDS = (7000, 20, 20)


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(main)``, on uvloop's event loop when uvloop is installed (extra ``fast``).

    The same asyncio code, with less CPU per socket event and TLS record (docs/performance.md); without
    uvloop, the standard event loop.
    """
    previous = sys.getswitchinterval()
    previous_gc = gc.get_threshold()
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is in the test extras
            return asyncio.run(main)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    finally:
        sys.setswitchinterval(previous)  # a caller in the same process (tests, the benchmark) gets its own back
        gc.set_threshold(*previous_gc)


@contextlib.contextmanager
def stop_on_signal() -> Iterator[asyncio.Event]:
    """An event set by the first SIGINT or SIGTERM while the block runs (install it before starting, so that a
    signal during start-up is not lost); the default handlers come back afterwards."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


async def wait_for_signal() -> None:
    """Return on the first SIGINT or SIGTERM."""
    with stop_on_signal() as stop:
        await stop.wait()


async def serve_until_signal(start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]) -> int:
    """``start()``, serve until SIGINT or SIGTERM, ``stop()``. The handlers are installed before ``start()``, so
    that a signal that arrives once the service said it is ready (sd_notify READY=1, the line it prints) but
    before this waits stops it cleanly rather than killing it."""
    with stop_on_signal() as stopped:
        await start()
        # What starting made (modules, settings, caches, pools) lives as long as the process: keep it out of the
        # cyclic garbage collector's full passes, which would otherwise walk all of it (~40 ms each) under load.
        gc.freeze()
        try:
            await stopped.wait()
        finally:
            await stop()
    return 0
