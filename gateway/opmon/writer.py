"""Taking operational-monitoring records off the hot path: :class:`OpMonWriter` (I/O).

The proxies hand each record to :meth:`OpMonWriter.offer`, which never waits: it appends to a bounded queue
(``[server] opmon_queue_records``) and, when that is full, drops the record and counts it
(``gateway_opmon_records_dropped_total{reason="queue_full"}``) rather than slow the exchange. One task
(:meth:`OpMonWriter.run`) drains the queue: once a record arrives it lets the batch gather for
``opmon_batch_seconds``, then whatever has accumulated, up to ``opmon_batch_records`` per batch, goes into one
batch insert, so batches grow with the load (a batch costs about the same whatever its size: at 1,000 records
per second, 0.05 s makes batches of 20-40 instead of 4-15, docs/performance.md section 10). A batch the
database refuses is dropped and counted (``reason="database"``) and logged: these records are operational,
not the message log, and never hold an exchange. Every :data:`PRUNE_SECONDS` (and at
start) the task deletes records older than ``opmon_retention_days``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from gateway.errors import GatewayError
from gateway.opmon.record import OpRecord
from gateway.opmon.store import MAX_BATCH, OpMonStore

log = structlog.get_logger("gateway.opmon")

PRUNE_SECONDS = 3600.0  # seconds between two prunings of records past their retention


class OpMonWriter:
    """The bounded queue and its draining task (module docstring). ``on_drop(reason, count)`` counts dropped
    records; ``clock`` gives the time that retention counts from; ``gather_seconds`` is how long a batch
    gathers records once the first has come (``opmon_batch_seconds``; :meth:`drain` itself never waits)."""

    def __init__(
        self, store: OpMonStore, *, max_queue: int, max_batch: int, retention_days: int,
        clock: Callable[[], datetime], on_drop: Callable[[str, int], None], gather_seconds: float = 0.0,
    ) -> None:
        if max_queue < 1:
            raise ValueError("opmon_queue_records must be at least 1")
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"opmon_batch_records must be within 1..{MAX_BATCH}")
        if retention_days < 1:
            raise ValueError("opmon_retention_days must be at least 1")
        if not 0 <= gather_seconds <= 1:
            raise ValueError("opmon_batch_seconds must be within 0..1")
        self.gather_seconds = gather_seconds
        self.store = store
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.retention = timedelta(days=retention_days)
        self.clock = clock
        self._on_drop = on_drop
        self._queue: deque[OpRecord] = deque()
        self._ready = asyncio.Event()  # set while the queue holds records
        self._idle = asyncio.Event()  # set while the queue is empty and no insert runs
        self._idle.set()

    def offer(self, record: OpRecord) -> bool:
        """Queue ``record`` for the database without waiting; False (and counted) if the queue is full."""
        queue = self._queue
        if len(queue) >= self.max_queue:
            self._on_drop("queue_full", 1)
            return False
        queue.append(record)
        if not self._ready.is_set():
            self._ready.set()
            self._idle.clear()
        return True

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def drain(self) -> None:
        """Write out everything queued now, batch by batch (what the task does; also at shutdown)."""
        queue = self._queue
        while queue:
            batch = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
            try:
                await self.store.insert(batch)
            except GatewayError as e:
                self._on_drop("database", len(batch))
                log.warning("operational monitoring records dropped", records=len(batch), error=e.message)
        self._ready.clear()
        self._idle.set()

    async def idle(self) -> None:
        """Return once everything offered so far is written (or dropped)."""
        await self._idle.wait()

    async def prune(self, now: datetime) -> int:
        """Delete the records older than the retention as of ``now``; how many.

        Raises:
            DatabaseError: the database refused.
        """
        deleted = await self.store.prune(now - self.retention)
        if deleted:
            log.info("operational monitoring records pruned", records=deleted,
                     retention_days=self.retention.days)
        return deleted

    async def run(self, stop: asyncio.Event) -> None:
        """Drain the queue as records arrive and prune every :data:`PRUNE_SECONDS`, until ``stop``; then
        drain once more."""
        loop = asyncio.get_running_loop()
        prune_at = loop.time()
        try:
            while not stop.is_set():
                if loop.time() >= prune_at:
                    prune_at = loop.time() + PRUNE_SECONDS
                    try:
                        await self.prune(self.clock())
                    except GatewayError as e:
                        log.warning("operational monitoring records not pruned", error=e.message)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), timeout=max(0.0, prune_at - loop.time()))
                if self._queue and self.gather_seconds > 0:
                    await asyncio.sleep(self.gather_seconds)  # the batch gathers (module docstring)
                await self.drain()
        finally:
            await self.drain()


__all__ = ["PRUNE_SECONDS", "OpMonWriter"]
