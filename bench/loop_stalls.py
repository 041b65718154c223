"""Event-loop stalls during a short load: asyncio's debug mode reports every callback that runs longer than
``--threshold`` (default 1 ms) on the loop that serves both security servers.

    .venv/bin/python bench/loop_stalls.py [--rate 20] [--duration 10] [--threshold 0.001] [--cpu]

What runs: a development PKI, a central server, the consumer's (ss1) and the provider's (ss2) security servers
(SQLite message log) and a 1 KiB JSON service, all on one standard asyncio event loop in this process, in
debug mode (uvloop has no slow-callback report); a load generator in a child process sends ``--rate``
exchanges per second for ``--duration`` seconds after a warm-up. It prints the message-log commits per
exchange of each server (their WriterStats), and each kind of slow callback (the task's coroutine or the
handle's function) with how often it ran past the threshold and its longest run.

Debug mode makes every callback slower (it tracks where coroutines were created and checks thread use), and
waits count too: for a core when other processes run, for the GIL when the message log's threads hold it. With
``--cpu`` the loop is not in debug mode and each callback's CPU time on the loop's thread (``thread_time``) is
measured instead: what the callback itself computed, without the waits. Read both as "what could block", not
as figures. Nothing here is part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.dev.demo import start_federation  # noqa: E402
from gateway.identifiers import ServiceId, SubsystemId  # noqa: E402
from gateway.serverconf.access import AccessRule  # noqa: E402

PAYLOAD = json.dumps({"items": [{"id": i, "name": f"record {i:04d}", "pad": "x" * 20} for i in range(18)]}).encode()
_SLOW = re.compile(r"Executing (?P<what>.*) took (?P<seconds>[0-9.]+) seconds")
_CORO = re.compile(r"coro=<(?P<name>[\w.<>]+)\(")
_HANDLE = re.compile(r"<(?:Timer)?Handle (?P<name>[\w.<>]+)\(")


class CpuTimes:
    """Times each callback's CPU on the loop's thread (``Handle._run`` wrapped), by callback."""

    def __init__(self, threshold: float) -> None:
        self.on = False
        self.threshold = threshold
        self.runs: dict[str, list[float]] = defaultdict(list)
        self.callbacks = 0
        run = asyncio.events.Handle._run
        times = self

        def timed(handle: asyncio.Handle) -> None:
            if not times.on:
                run(handle)
                return
            t0 = time.thread_time()
            run(handle)
            spent = time.thread_time() - t0
            times.callbacks += 1
            if spent >= times.threshold:
                what = asyncio.base_events._format_handle(handle)  # type: ignore[attr-defined]  # asyncio's own
                name = _CORO.search(what) or _HANDLE.search(what)
                label = name["name"] if name else what[:80]
                where = _suspended_at(handle)
                times.runs[f"{label} -> {where}" if where else label].append(spent * 1000)

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]  # this process only, for the run


def _suspended_at(handle: asyncio.Handle) -> str:
    """For a task's step: the innermost line of gateway code where the task waits now (where the step ended)."""
    task = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]  # Task.__step / __wakeup
    if not isinstance(task, asyncio.Task):
        return ""
    where = ""
    coro = task.get_coro()
    while coro is not None and hasattr(coro, "cr_frame"):
        frame = coro.cr_frame
        if frame is not None and "/gateway/" in frame.f_code.co_filename:
            where = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}"
        coro = getattr(coro, "cr_await", None)
    return where


class SlowCallbacks(logging.Handler):
    """Collects asyncio's "Executing ... took N seconds" warnings, by callback."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.on = False
        self.runs: dict[str, list[float]] = defaultdict(list)

    def emit(self, record: logging.LogRecord) -> None:
        if not self.on:
            return
        match = _SLOW.search(record.getMessage())
        if match is None:
            return
        what = match["what"]
        name = _CORO.search(what) or _HANDLE.search(what)
        self.runs[name["name"] if name else what[:80]].append(float(match["seconds"]) * 1000)


async def json_service() -> tuple[web.AppRunner, str]:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


# ---- load generator (a child process: python bench/loop_stalls.py --loadgen URL HEADERS RATE DURATION) -------


async def loadgen(url: str, headers: dict[str, str], rate: float, duration: float) -> dict[str, float]:
    parsed = urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    request = "\r\n".join([f"GET {parsed.path} HTTP/1.1", f"Host: {host}:{port}",
                           *(f"{k}: {v}" for k, v in headers.items()), "", ""]).encode()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    latencies: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        reader, writer = idle.pop() if idle else await asyncio.open_connection(host, port)
        t0 = time.perf_counter()
        writer.write(request)
        status = int((await reader.readline()).split(b" ", 2)[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        latencies.append((time.perf_counter() - t0) * 1000)
        errors += status != 200
        idle.append((reader, writer))

    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * duration)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    for _reader, writer in idle:
        writer.close()
    latencies.sort()
    return {"exchanges": len(latencies), "errors": errors, "p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[int(0.99 * len(latencies))]}


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    handler = SlowCallbacks()
    logging.getLogger("asyncio").addHandler(handler)
    cpu = CpuTimes(args.threshold) if args.cpu else None
    service_runner, service_url = await json_service()
    fed = await start_federation(Path(args.workdir), with_adapters=False,
                                 adapter_urls={"persons": service_url, "companies": service_url})
    try:
        ss1, ss2 = fed.server("ss1"), fed.server("ss2")
        service = ServiceId.parse("DEV/GOV/1002/registry/bench")
        consumer = SubsystemId.parse("DEV/GOV/1001/consumer")
        await ss2.store.add_service(service, url=service_url)
        await ss2.store.grant(AccessRule(subject=consumer, service=service))
        await ss2.reload_serverconf()
        url = f"{ss1.client_url}/r1/{service}/items"
        headers = {"X-Road-Client": str(consumer)}
        warm = await run_loadgen(url, headers, rate=20, duration=2)  # pooled connections, caches, imports
        assert warm["errors"] == 0, warm
        gc.freeze()  # as `gateway server serve` does after start-up
        before = {code: ss.messagelog.stats.batches for code, ss in (("ss1", ss1), ("ss2", ss2))}
        if cpu is None:
            loop.set_debug(True)
            loop.slow_callback_duration = args.threshold
            handler.on = True
        else:
            cpu.on = True
        result = await run_loadgen(url, headers, rate=args.rate, duration=args.duration)
        handler.on = False
        loop.set_debug(False)
        if cpu is not None:
            cpu.on = False
        commits = {code: (ss.messagelog.stats.batches - before[code]) / max(1, result["exchanges"])
                   for code, ss in (("ss1", ss1), ("ss2", ss2))}
    finally:
        await fed.close()
        await service_runner.cleanup()
    mode = "debug mode, wall-clock time" if cpu is None else f"CPU time of {cpu.callbacks} callbacks"
    print(f"{result['exchanges']:.0f} exchanges at {args.rate:g}/s, {result['errors']:.0f} errors, "
          f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; {mode}; callbacks over "
          f"{args.threshold * 1000:g} ms:")
    print(f"commits per exchange: consumer (ss1) {commits['ss1']:.2f}, provider (ss2) {commits['ss2']:.2f}")
    runs_by_name = handler.runs if cpu is None else cpu.runs
    if not runs_by_name:
        print("  none")
    for name, runs in sorted(runs_by_name.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(runs):6d} x  max {max(runs):7.1f} ms  median {statistics.median(runs):6.1f} ms  {name}")


async def run_loadgen(url: str, headers: dict[str, str], *, rate: float, duration: float) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--loadgen", url, json.dumps(headers), str(rate), str(duration),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed with exit code {proc.returncode}")
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--loadgen":
        _url, _headers, _rate, _duration = sys.argv[2:]
        print(json.dumps(asyncio.run(loadgen(_url, json.loads(_headers), float(_rate), float(_duration)))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0, help="exchanges per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--threshold", type=float, default=0.001, help="seconds a callback may run")
    parser.add_argument("--cpu", action="store_true", help="CPU time per callback instead of debug mode")
    parser.add_argument("--workdir", default="/tmp/gateway-loop-stalls", help="the federation's files")
    sys.setswitchinterval(0.0002)  # as gateway.cli.run sets it for every serving command
    asyncio.run(main(parser.parse_args()))
