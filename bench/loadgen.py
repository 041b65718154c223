"""The exchange benchmark's load generator: kept-alive HTTP/1.1 GETs, closed loop or at a fixed rate.

    .venv/bin/python bench/loadgen.py --url URL [--header NAME:VALUE ...] --mode closed --connections 32 --duration 5
    .venv/bin/python bench/loadgen.py --url URL --mode rate --rate 200 --duration 5

``bench/exchange.py`` runs it as a process of its own, so that the load does not share an event loop with
what it measures, and reads the one JSON line it prints: ``requests`` (answers with status 200), ``errors``
(any other status, and requests that failed: refused or dropped connections, malformed answers), ``seconds``,
``rps`` (200 answers per second), ``p50_ms``, ``p90_ms``, ``p99_ms``, ``max_ms``, ``mean_ms`` (latencies of
the 200 answers), ``connections`` (the most connections open at once) and ``cpu_s`` (this process's CPU
time during the load).

Each connection is an asyncio ``Protocol`` that writes a request built once and parses the answer with
``httptools``: a few microseconds of Python per request, so that the load generator takes little of the CPU
it measures. On uvloop when installed.

- ``closed``: ``--connections`` workers, each sending its next request as soon as its answer is complete.
- ``rate``: ``--rate`` requests per second, due at fixed times whatever the answers do (open loop), each on an
  idle connection or a new one when all are busy; a latency is counted from the moment its request was due,
  so a late load generator does not hide time spent waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import cast
from urllib.parse import urlsplit

import httptools


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bool]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(ConnectionError(f"malformed answer: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionError("connection closed before the answer ended"))

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), self.parser.should_keep_alive()))

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class Client:
    """One kept-alive connection that sends the same GET again and again (reconnecting when it must)."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self.conn: _Connection | None = None

    async def get(self) -> int:
        """Send the request and read the whole answer: its status.

        Raises:
            OSError, ConnectionError: the connection failed or the answer was malformed (the connection is gone).
        """
        loop = asyncio.get_running_loop()
        if self.conn is None or self.conn.transport is None:
            _, self.conn = await loop.create_connection(_Connection, self.host, self.port)
        conn = self.conn
        assert conn.transport is not None
        conn.waiter = loop.create_future()
        conn.transport.write(self.request)
        try:
            status, keep_alive = await conn.waiter
        except BaseException:
            self.conn = None
            raise
        if not keep_alive:
            self.close()
        return status

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()
        self.conn = None


def build_request(url: str, headers: dict[str, str], body: bytes = b"") -> tuple[str, int, bytes]:
    """The request bytes: a GET, or with ``body`` a POST of it (bench/soap.py)."""
    parsed = urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise SystemExit(f"loadgen: {url!r} is not an http:// URL with a host")
    host, port = parsed.hostname, parsed.port or 80
    target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    method = "POST" if body else "GET"
    framing = [f"Content-Length: {len(body)}"] if body else []
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items()),
             *framing, "", ""]
    return host, port, "\r\n".join(lines).encode() + body


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.open = 0
        self.most_open = 0

    def summary(self, elapsed: float, cpu_s: float) -> dict[str, float]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 if lat else float("nan")

        return {
            "requests": len(lat), "errors": self.errors, "seconds": elapsed,
            "rps": len(lat) / elapsed if elapsed else 0.0,
            "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
            "max_ms": lat[-1] * 1000 if lat else float("nan"),
            "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
            "connections": self.most_open, "cpu_s": cpu_s,
        }


async def _one(client: Client, tally: Tally, due: float) -> None:
    try:
        status = await client.get()
    except (OSError, ConnectionError):
        tally.errors += 1
        return
    if status == 200:
        tally.latencies.append(time.perf_counter() - due)
    else:
        tally.errors += 1


async def closed_loop(
    url: str, headers: dict[str, str], connections: int, duration: float, body: bytes = b"",
) -> dict[str, float]:
    host, port, request = build_request(url, headers, body)
    tally = Tally()
    tally.most_open = connections
    clients = [Client(host, port, request) for _ in range(connections)]
    cpu0 = time.process_time()
    t_start = time.perf_counter()
    deadline = t_start + duration

    async def worker(client: Client) -> None:
        while (t0 := time.perf_counter()) < deadline:
            await _one(client, tally, t0)

    await asyncio.gather(*(worker(c) for c in clients))
    elapsed = time.perf_counter() - t_start
    cpu = time.process_time() - cpu0
    for c in clients:
        c.close()
    return tally.summary(elapsed, cpu)


async def rate_loop(
    url: str, headers: dict[str, str], rate: float, duration: float, body: bytes = b"",
) -> dict[str, float]:
    host, port, request = build_request(url, headers, body)
    tally = Tally()
    idle: list[Client] = []  # connections not in use; a new one when all are busy

    async def one(due: float) -> None:
        client = idle.pop() if idle else Client(host, port, request)
        tally.open += 1
        tally.most_open = max(tally.most_open, tally.open + len(idle))
        await _one(client, tally, due)
        tally.open -= 1
        idle.append(client)

    tasks = []
    cpu0 = time.process_time()
    t_start = time.perf_counter()
    for i in range(int(rate * duration)):
        due = t_start + i / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t_start
    cpu = time.process_time() - cpu0
    for c in idle:
        c.close()
    return tally.summary(elapsed, cpu)


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:VALUE")
    return name.strip(), value.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="http://HOST:PORT/PATH to GET")
    parser.add_argument("--header", type=_header, action="append", default=[], help="NAME:VALUE, repeatable")
    parser.add_argument("--mode", choices=("closed", "rate"), required=True)
    parser.add_argument("--connections", type=int, default=32, help="closed loop: connections (workers)")
    parser.add_argument("--rate", type=float, default=200.0, help="rate: requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load")
    parser.add_argument("--body-file", help="POST this file's bytes instead of a GET")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("--connections must be at least 1, --rate and --duration above 0")
    headers = dict(args.header)
    body = b""
    if args.body_file:
        with open(args.body_file, "rb") as f:
            body = f.read()
    if args.mode == "closed":
        coro = closed_loop(args.url, headers, args.connections, args.duration, body)
    else:
        coro = rate_loop(args.url, headers, args.rate, args.duration, body)
    try:
        import uvloop
    except ImportError:
        print("loadgen: uvloop is not installed (pip install -e '.[bench]'); using asyncio's event loop",
              file=sys.stderr)
        result = asyncio.run(coro)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(coro)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
