"""The cost of the operational-monitoring records to a security server, per record, in CPU.

    .venv/bin/python bench/opmon.py [--rate 1000] [--duration 3] [--rounds 3] [--backends sqlite,postgresql]
                                    [--gather-seconds 0.05]

One process: an :class:`~gateway.opmon.writer.OpMonWriter` over an :class:`~gateway.opmon.store.OpMonStore`
on a fresh SQLite file (as ``<database>-opmon``) or PostgreSQL database, its task draining the queue as a
server's does, while the event loop offers records at a steady ``--rate`` per second for ``--duration``
seconds (those due every 5 ms, built beforehand). It prints, in µs per record: the event loop thread's CPU
(``time.thread_time`` there) and the whole process's CPU (``time.process_time``: also the writer's thread and
the driver's), each less the same loop offering the records to no writer (the producer's own cost), and the
mean batch size. Alternate it between
two trees to compare them. It asserts nothing; it is never part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.opmon.record import OpRecord  # noqa: E402
from gateway.opmon.store import OpMonStore  # noqa: E402
from gateway.opmon.writer import OpMonWriter  # noqa: E402
from gateway.storage.db import make_engine  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def record(i: int) -> OpRecord:
    """A record as a client side's, ids and times fresh."""
    t = datetime.now(UTC)
    return OpRecord(
        side="client",
        origin="SERVER:DEV/GOV/1001/ss1",
        message_id=str(uuid.uuid4()),
        request_id=str(uuid.uuid4()),
        client="SUBSYSTEM:DEV/GOV/1001/consumer",
        service="SERVICE:DEV/GOV/1002/registry/bench",
        method="GET",
        request_in=t,
        request_out=t + timedelta(microseconds=300),
        response_in=t + timedelta(milliseconds=2),
        response_out=t + timedelta(milliseconds=2, microseconds=100),
        request_bytes=0,
        response_bytes=1024,
        status=200,
        fault=None,
        peer_server="SERVER:DEV/GOV/1002/ss2",
    )


TICK = 0.005  # seconds between two offers of the records due by then


async def offer_at_rate(offer: object, records: list[OpRecord], rate: float) -> tuple[float, float]:
    """Offer ``records`` at ``rate`` per second, those due every :data:`TICK`; the loop thread's and the
    process's CPU seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    cpu0, proc0 = time.thread_time(), time.process_time()
    sent = 0
    while sent < len(records):
        due = min(len(records), int((loop.time() - start) * rate) + 1)
        for r in records[sent:due]:
            offer(r)  # type: ignore[operator]
        sent = due
        await asyncio.sleep(TICK)
    return time.thread_time() - cpu0, time.process_time() - proc0


async def one(backend: str, rate: float, duration: float, gather: float, work: Path) -> tuple[float, float, float]:
    name = ""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{work / uuid.uuid4().hex}-opmon"
    else:
        name = f"bench_opmon_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(PG_ADMIN)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    engine = make_engine(url)
    store = OpMonStore(engine)
    await store.migrate()
    batches: list[int] = []
    insert = store.insert

    async def counted(batch: list[OpRecord]) -> None:
        batches.append(len(batch))
        await insert(batch)

    store.insert = counted  # type: ignore[method-assign]
    extra = {"gather_seconds": gather} if "gather_seconds" in inspect.signature(OpMonWriter).parameters else {}
    writer = OpMonWriter(
        store,
        max_queue=100_000,
        max_batch=1000,
        retention_days=7,
        clock=lambda: datetime.now(UTC),
        on_drop=lambda reason, n: None,
        **extra,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    await writer.idle()
    await asyncio.sleep(0.2)  # the first pruning done
    records = [record(i) for i in range(int(rate * duration))]
    n = len(records)
    base_loop, base_proc = await offer_at_rate(lambda r: None, records, rate)
    batches.clear()
    cpu_loop, cpu_proc = await offer_at_rate(writer.offer, records, rate)
    await writer.idle()
    stop.set()
    task.cancel()  # as the server does: the task drains once more and ends
    await asyncio.gather(task, return_exceptions=True)
    close = getattr(store, "close", None)
    if close is not None:
        await close()
    await engine.dispose()
    if name:
        conn = await asyncpg.connect(PG_ADMIN)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
    return (
        (cpu_loop - base_loop) / n * 1e6,
        (cpu_proc - base_proc) / n * 1e6,
        statistics.fmean(batches) if batches else 0.0,
    )


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-opmon-"))
    print(f"{'backend':<11} {'round':>5} {'loop µs/rec':>12} {'process µs/rec':>15} {'records/batch':>14}")
    for backend in args.backends.split(","):
        for r in range(1, args.rounds + 1):
            loop_us, proc_us, per_batch = await one(backend, args.rate, args.duration, args.gather_seconds, work)
            print(f"{backend:<11} {r:>5} {loop_us:>12.1f} {proc_us:>15.1f} {per_batch:>14.1f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0, help="records offered per second (default 1000)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per round (default 3)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--gather-seconds",
        type=float,
        default=0.05,
        help="the writer's opmon_batch_seconds, where it has the setting (default 0.05)",
    )
    parser.add_argument("--backends", default="sqlite,postgresql")
    asyncio.run(main(parser.parse_args()))
