"""Cost per exchange of the ``exchange`` log line and of building and queueing the operational-monitoring
record (gateway.proxy.observe), in microseconds of CPU (thread time) per call, median of several rounds.

    .venv/bin/python bench/exchange_log.py [--number 20000]

The log line goes through the production processors (structlog configured as ``gateway.logs`` does with
``format = "json"``, level info) to ``/dev/null``: as ``log.info`` with the client proxy's context variables
bound and unbound, and as ``gateway.logs.info_line`` writes it (what ``exchange_done`` calls, with nothing
bound); the record is built as ``exchange_done`` builds it and
offered to a writer's queue (drained between rounds, no database involved). It asserts nothing; it is never
part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from gateway.logs import configure_logging, info_line  # noqa: E402
from gateway.opmon.record import OpRecord  # noqa: E402
from gateway.opmon.writer import OpMonWriter  # noqa: E402
from gateway.settings import LoggingSettings  # noqa: E402


def _per_call_us(fn: Callable[[], None], number: int, rounds: int = 7) -> float:
    results = []
    for _ in range(rounds):
        t0 = time.thread_time()
        for _ in range(number):
            fn()
        results.append((time.thread_time() - t0) / number * 1e6)
    return statistics.median(results)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    devnull = open(os.devnull, "w")
    sys.stderr = devnull  # configure_logging writes to whatever sys.stderr is
    configure_logging(LoggingSettings(level="info", format="json"))
    log = structlog.get_logger("gateway.proxy.exchange")
    structlog.contextvars.bind_contextvars(message_id="DEV-9f0c", client="DEV/GOV/1001/consumer",
                                           service="DEV/GOV/1002/registry/persons")

    def line() -> None:
        log.info("exchange", side="client", request_id="5b0d3c1e-9a40-4e4e-8f6c-3f0d5a7f1b2c",
                 message_id="DEV-9f0c", client="DEV/GOV/1001/consumer", service="DEV/GOV/1002/registry/persons",
                 status=200, fault=None, duration_ms=1.234)

    writer = OpMonWriter(store=None, max_queue=10**7, max_batch=1000, retention_days=7,  # type: ignore[arg-type]
                         clock=lambda: datetime.now(UTC), on_drop=lambda _r, _n: None)
    arrived = datetime.now(UTC)

    def record() -> None:
        writer.offer(OpRecord(
            side="client", origin="DEV/GOV/1001/ss1", message_id="DEV-9f0c",
            request_id="5b0d3c1e-9a40-4e4e-8f6c-3f0d5a7f1b2c", client="DEV/GOV/1001/consumer",
            service="DEV/GOV/1002/registry/persons", method="GET", request_in=arrived,
            request_out=arrived + timedelta(seconds=0.0002), response_in=arrived + timedelta(seconds=0.0009),
            response_out=arrived + timedelta(seconds=0.001), request_bytes=0, response_bytes=312, status=200,
            fault=None, peer_server="DEV/GOV/1002/ss2",
        ))

    def direct() -> None:  # what exchange_done writes: gateway.logs.info_line
        info_line(log, "exchange", {
            "side": "client", "request_id": "5b0d3c1e-9a40-4e4e-8f6c-3f0d5a7f1b2c", "message_id": "DEV-9f0c",
            "client": "DEV/GOV/1001/consumer", "service": "DEV/GOV/1002/registry/persons", "status": 200,
            "fault": None, "duration_ms": 1.234})

    figures = {"log.info, context bound (JSON, info)": _per_call_us(line, args.number)}
    structlog.contextvars.unbind_contextvars("message_id", "client", "service")  # as at exchange_done
    figures["log.info (JSON, info)"] = _per_call_us(line, args.number)
    figures["logs.info_line (JSON, info)"] = _per_call_us(direct, args.number)
    figures["opmon record built and queued"] = _per_call_us(record, args.number)
    sys.stderr = sys.__stderr__
    devnull.close()
    for name, us in figures.items():
        print(f"{name:40s} {us:7.2f} µs per exchange")


if __name__ == "__main__":
    asyncio.run(main())
