"""Exchange benchmark: the same load against the service directly and through both security servers.

    .venv/bin/python bench/exchange.py [--duration 10] [--concurrency 32] [--rate 200]

What runs (all on 127.0.0.1):
- a development PKI, a central server and a 1 KiB JSON service, in this process;
- the consumer's (ss1) and the provider's (ss2) security servers, each as its own ``gateway server serve``
  process (SQLite message log, signing and logging on, as in production);
- a load generator in its own process, on kept-alive connections with a minimal HTTP/1.1 client
  (``KeepAlive``, so that it takes little CPU from what it measures; its CPU per request is printed): closed
  loop with ``--concurrency`` workers for the throughput figure, then open loop at ``--rate`` requests/s for
  the latency figure.

It prints requests/s and latency percentiles for (a) direct calls to the service and (b) calls through both
security servers, twice in the same run: with the message log in SQLite (as in production) and with the
servers restarted with ``[server] messagelog_backend = "memory"`` (logging off: no database write, everything
else unchanged), and what logging costs in % of the throughput. It asserts nothing; it is never part of the
test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.cli.run import run  # noqa: E402
from gateway.dev.demo import start_federation  # noqa: E402
from gateway.identifiers import ServiceId, SubsystemId  # noqa: E402
from gateway.serverconf.access import AccessRule  # noqa: E402

PAYLOAD = json.dumps({"items": [{"id": i, "name": f"record {i:04d}", "pad": "x" * 20} for i in range(18)]}).encode()


async def json_service(port: int = 0) -> tuple[web.AppRunner, str]:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=PAYLOAD, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


# ---- load generator (runs in a child process: python bench/exchange.py --loadgen ...) ------------------------


class KeepAlive:
    """One kept-alive HTTP/1.1 connection of the load generator.

    The request is built once and written in one piece; the answer is read by its Content-Length (or chunk by
    chunk). That costs a few microseconds of Python per request where aiohttp's client costs a few hundred,
    so the load generator takes little of the two cores from what it measures. Both the direct calls and the
    calls through the security servers use it.
    """

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parsed = urlsplit(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        self.request = "\r\n".join(lines).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self) -> int:
        """Send the request, read the whole answer; its status."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader = self.reader
        self.writer.write(self.request)
        status = int((await reader.readline()).split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            while size := int((await reader.readline()).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readline()
        elif length:
            await reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(url: str, headers: dict[str, str], concurrency: int, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration
    conns = [KeepAlive(url, headers) for _ in range(concurrency)]

    async def worker(conn: KeepAlive) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            if await conn.get() != 200:
                errors += 1
            latencies.append(time.perf_counter() - t0)

    t_start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - t_start
    for c in conns:
        c.close()
    return summarise(latencies, elapsed, errors)


async def open_loop(url: str, headers: dict[str, str], rate: float, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    total = int(rate * duration)
    idle: list[KeepAlive] = []  # connections not in use; a new one when all are busy

    async def one() -> None:
        nonlocal errors
        conn = idle.pop() if idle else KeepAlive(url, headers)
        t0 = time.perf_counter()
        if await conn.get() != 200:
            errors += 1
        latencies.append(time.perf_counter() - t0)
        idle.append(conn)

    tasks = []
    t_start = time.perf_counter()
    for i in range(total):
        delay = t_start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t_start
    for c in idle:
        c.close()
    return summarise(latencies, elapsed, errors)


def summarise(latencies: list[float], elapsed: float, errors: int) -> dict[str, float]:
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 if lat else float("nan")

    return {
        "requests": len(lat), "errors": errors, "seconds": elapsed, "rps": len(lat) / elapsed if elapsed else 0.0,
        "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": lat[-1] * 1000 if lat else float("nan"),
        "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
    }


def loadgen_main(args: argparse.Namespace) -> None:
    headers = json.loads(args.headers)
    cpu0 = time.process_time()
    if args.mode == "closed":
        result = run(closed_loop(args.url, headers, args.concurrency, args.duration))
    else:
        result = run(open_loop(args.url, headers, args.rate, args.duration))
    result["loadgen_cpu_s"] = time.process_time() - cpu0  # the load itself, not the interpreter's start-up
    print(json.dumps(result))


async def run_loadgen(url: str, headers: dict[str, str], mode: str, args: argparse.Namespace) -> dict[str, float]:
    # A child process, so that the load does not share this process's event loop (which serves the service).
    cmd = [__file__, "--loadgen", "--url", url, "--headers", json.dumps(headers), "--mode", mode,
           "--duration", str(args.duration), "--concurrency", str(args.concurrency), "--rate", str(args.rate)]
    proc = await asyncio.create_subprocess_exec(sys.executable, *cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed with exit code {proc.returncode}")
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


# ---- orchestration ------------------------------------------------------------------------------------------


async def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            await asyncio.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settings_with_ports(path: Path, client_port: int, server_port: int) -> Path:
    text = path.read_text()
    out = []
    for line in text.splitlines():
        if line.startswith("client_port ="):
            line = f"client_port = {client_port}"
        elif line.startswith("server_port ="):
            line = f"server_port = {server_port}"
        elif line.startswith("client_https_port ="):
            line = "client_https_port = -1"
        out.append(line)
    new = path.with_name(path.stem + "-bench.toml")
    new.write_text("\n".join(out) + "\n")
    return new


def stop_servers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    service_runner, service_url = await json_service()
    consumer = SubsystemId.parse("DEV/GOV/1001/consumer")
    service = ServiceId.parse("DEV/GOV/1002/registry/bench")
    fed = await start_federation(work / "fed", with_adapters=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ss1, ss2 = fed.server("ss1"), fed.server("ss2")
        await ss2.store.add_service(service, url=service_url)
        await ss2.store.grant(AccessRule(subject=consumer, service=service))
        ports = {}
        for code, ss in (("ss1", ss1), ("ss2", ss2)):
            ports[code] = (int(ss.client_url.rsplit(":", 1)[1]), int(ss.server_address.rsplit(":", 1)[1]))
        # run both security servers in their own processes, on the ports registered centrally
        for ss in (ss1, ss2):
            await ss.stop()
        client_url = f"http://127.0.0.1:{ports['ss1'][0]}"
        headers = {"X-Road-Client": str(consumer), "Accept": "application/json"}
        via = f"{client_url}/r1/{service}/items"

        async def start_servers(backend: str) -> None:
            for code in ("ss1", "ss2"):
                cfg = settings_with_ports(fed.workdir / f"{code}.toml", *ports[code])
                env = dict(os.environ, GATEWAY_LOGGING__LEVEL="warning", GATEWAY_SERVER__MESSAGELOG_BACKEND=backend)
                procs.append(subprocess.Popen([str(ROOT / ".venv/bin/gateway"), "-c", str(cfg), "server", "serve"],
                                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            # both servers: ss1 answers /healthz before ss2 may be listening on its peer port
            for code in ("ss1", "ss2"):
                await wait_http(f"http://127.0.0.1:{ports[code][0]}/healthz")
            # warm up: OCSP caches, SQLite pages, and as many pooled mTLS connections between the servers as the
            # closed loop keeps busy (a handshake costs more than an exchange; steady state has none)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

                async def warm() -> None:
                    for _ in range(10):
                        async with session.get(via, headers=headers) as resp:
                            body = await resp.read()
                            assert resp.status == 200, (resp.status, body[:300])

                await asyncio.gather(*(warm() for _ in range(2 * args.concurrency)))

        print(f"payload {len(PAYLOAD)} bytes; concurrency {args.concurrency}; {args.duration:g} s per run; "
              f"{os.cpu_count()} CPUs", flush=True)
        results = {}
        cpu: dict[str, dict[str, float]] = {}
        results[("direct", "closed")] = await run_loadgen(f"{service_url}/items", {}, "closed", args)
        results[("direct", "open")] = await run_loadgen(f"{service_url}/items", {}, "open", args)
        # through the servers twice in this run: message log in SQL (as in production), then in memory (the
        # servers restarted with [server] messagelog_backend = "memory": signing, verifying and checkpoints
        # unchanged, no database write)
        for label, backend in (("via servers, logging on", "sql"), ("via servers, logging off", "memory")):
            await start_servers(backend)
            before = [cpu_seconds(p.pid) for p in procs]
            results[(label, "closed")] = await run_loadgen(via, headers, "closed", args)
            cpu[label] = {name: cpu_seconds(p.pid) - b for name, p, b in zip(("ss1", "ss2"), procs, before,
                                                                                strict=True)}
            results[(label, "open")] = await run_loadgen(via, headers, "open", args)
            stop_servers(procs)
            procs.clear()
        print(f"{'':24} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for (label, mode), r in results.items():
            name = f"{label} ({'max' if mode == 'closed' else str(int(args.rate)) + '/s'})"
            print(f"{name:36} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['p99_ms']:8.2f} "
                  f"{int(r['errors']):7d}")
        for label, per_server in cpu.items():
            closed = results[(label, "closed")]
            for name, seconds in per_server.items():
                print(f"{label}, {name}: {seconds / closed['seconds']:.2f} cores busy, "
                      f"{1000 * seconds / max(1, closed['requests']):.2f} ms CPU per exchange")
        for (label, mode), r in results.items():
            if mode == "closed":
                print(f"load generator, {label}: {1000 * r['loadgen_cpu_s'] / max(1, r['requests']):.3f} ms CPU "
                      "per request")
        on, off = results[("via servers, logging on", "closed")], results[("via servers, logging off", "closed")]
        for label in ("via servers, logging on", "via servers, logging off"):
            ratio = results[(label, "closed")]["rps"] / results[("direct", "closed")]["rps"]
            print(f"throughput {label} / direct: {ratio:.2f}")
        print(f"logging on vs off: {on['rps']:.0f} vs {off['rps']:.0f} exchanges/s; logging costs "
              f"{100 * (1 - on['rps'] / off['rps']):.1f}% of the throughput (target: under 20%)")
    finally:
        stop_servers(procs)
        await fed.close()
        await service_runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop workers")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests per second")
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--headers", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="closed", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.loadgen:
        loadgen_main(a)
    else:
        asyncio.run(main(a))
