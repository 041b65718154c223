"""Waiting for something another task or process does, with a timeout (tests only).

Within one event loop, await the event itself; across processes (another process's database, its children)
or for state a background task changes on its own schedule, there is nothing to await, so
:func:`wait_for_condition` looks again every :data:`POLL_SECONDS` until the condition holds, and fails with
``what`` after ``timeout`` seconds. The poll interval is not a synchronisation: the condition is.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

POLL_SECONDS = 0.05  # seconds between two looks


async def wait_for_condition(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float, what: str,
) -> None:
    """Return once ``condition()`` (sync or async) is true; AssertionError naming ``what`` after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = condition()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None
