"""Exchange benchmark: the same load on five chains in front of one 1 KiB service, alternated in one run.

    .venv/bin/pip install -e '.[bench]'           # httptools and uvloop, for the relay and the load generator
    .venv/bin/python bench/exchange.py [--rounds 3] [--duration 5] [--chains direct,nginx,relay,gateway,gateway-nolog]
                                       [--connections 32,128] [--rate 200] [--json FILE] [--require-nginx] [--quick]

The chains (all on 127.0.0.1; the service, a development PKI and a central server run in this process):

- ``direct``: the load generator calls the service;
- ``nginx``: two nginx instances, mutual TLS between them (``bench/nginx.py``); skipped with a message when
  there is no nginx binary, unless ``--require-nginx`` (then the bench stops before it starts anything);
- ``relay``: two ``bench/relay.py`` processes, mutual TLS between them (a bare Python relay, no logic);
- ``gateway``: the consumer's (ss1) and the provider's (ss2) security servers, each a ``gateway server
  serve`` process, message log in SQLite, signing and logging on, as in production;
- ``gateway-nolog``: the same two servers with ``[server] messagelog_backend = "memory"``: records are still
  built, hashed and checkpointed, but kept in memory and never written to a database. There is no setting
  that switches the message log off entirely; this is the closest.
- ``gateway-noopmon`` (only when named in ``--chains``): ``gateway`` without the operational-monitoring records
  and the per-exchange log line (``opmon_records = false``, ``exchange_log = false``), to show what they cost.

Every hop in front of the service is its own process. Each round runs every chain in the order given, so
chains alternate (A B C A B C ...); a chain's processes are started for its turn (and warmed up: as many
kept-alive connections as the largest closed loop, so that handshakes do not count) and stopped after it.
In each turn the load generator (``bench/loadgen.py``, its own process) runs a closed loop for each of
``--connections`` and then an open loop at ``--rate`` requests/s, ``--duration`` seconds each.

Printed: a line per measurement as it ends, then a table of every measurement with requests/s, p50/p90/p99
latency, errors, the ratio of the chain's requests/s to ``relay``'s in the same round and mode, and each
proxy process's CPU time per exchange (user + system, all threads and, for nginx, its worker; measured over
that measurement); then a markdown table for docs/performance.md with the figure of each round. ``--json
FILE`` writes all of it. The bench asserts nothing and is never part of the test run; every process it
starts is stopped when it ends, fails or is interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

try:
    import httptools  # noqa: F401  # used by relay.py and loadgen.py; checked here to say how to get it
except ImportError:
    raise SystemExit("bench/exchange.py needs the bench extra: .venv/bin/pip install -e '.[bench]'") from None

import aiohttp  # noqa: E402
import nginx  # noqa: E402
from aiohttp import web  # noqa: E402
from relay import MtlsFiles, write_mtls_files  # noqa: E402

from gateway.cli.run import run  # noqa: E402
from gateway.dev.demo import start_federation  # noqa: E402
from gateway.identifiers import ServiceId, SubsystemId  # noqa: E402
from gateway.serverconf.access import AccessRule  # noqa: E402

CHAINS = ("direct", "nginx", "relay", "gateway", "gateway-nolog")  # the default set, the JSON rows
EXTRA_CHAINS = ("gateway-noopmon",)  # only when asked for
PAYLOAD = json.dumps({"items": [{"id": i, "name": f"record {i:04d}", "pad": "x" * 20} for i in range(18)]}).encode()
QUICK_DURATION = 1.0  # seconds per measurement with --quick
STOP_TIMEOUT = 20.0  # seconds a child has to stop after SIGTERM before it is killed
START_TIMEOUT = 30.0  # seconds a chain has to answer after its processes start


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


# ---- child processes ----------------------------------------------------------------------------------------


class ChainError(Exception):
    """A chain did not start or did not answer; the message says why (with its processes' log tails)."""


_PR_SET_PDEATHSIG = 1
try:  # looked up here, not in the child: between fork and exec it only calls it
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # Linux: SIGTERM when the bench's process ends, even by SIGKILL (Popen is only called from the main thread,
    # whose end is what the kernel watches). Elsewhere the bench's own clean-up is all there is.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(eq=False)
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path  # its stderr (and stdout unless piped)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").rstrip().splitlines()[-lines:]
        except OSError as e:
            return f"  ({self.name}: no log: {e})"
        state = "running" if self.alive() else f"exited with {self.proc.returncode}"
        return "\n".join([f"  --- {self.name} ({state}), last lines of {self.log}:", *(f"  {t}" for t in text)])

    def pids(self) -> list[int]:
        """This process and its descendants (nginx's worker), as /proc lists them now."""
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        found = [self.proc.pid]
        for pid in found:
            found.extend(p for p, parent in parents.items() if parent == pid)
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process, its threads and its descendants so far."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")


class Children:
    """Every process the bench starts: each in a session of its own (a Ctrl-C reaches the bench only, which
    stops them in order), told to stop when the bench's process ends, its output in a log file."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.running: list[Child] = []
        self._count = 0

    def start(self, name: str, argv: list[str], *, pipe_stdout: bool = False, **popen: Any) -> Child:
        self._count += 1
        log = self.logdir / f"{self._count:03d}-{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if pipe_stdout else out,
                                    stderr=out, start_new_session=True, preexec_fn=_die_with_parent, **popen)
        child = Child(name, proc, log)
        self.running.append(child)
        return child

    async def stop(self, *children: Child) -> None:
        """SIGTERM, then SIGKILL (the process and its descendants) after STOP_TIMEOUT."""
        for child in children:
            if child.alive():
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        for child in children:
            try:
                await asyncio.to_thread(child.proc.wait, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                for pid in reversed(child.pids()):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                await asyncio.to_thread(child.proc.wait)
            if child.proc.stdout is not None:
                child.proc.stdout.close()
            if child in self.running:
                self.running.remove(child)

    async def stop_all(self) -> None:
        await self.stop(*reversed(self.running))


async def read_listening_line(child: Child) -> int:
    """The port of a ``bench/relay.py`` hop, from the ``listening HOST:PORT`` line it prints once it accepts."""
    assert child.proc.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.proc.stdout.readline), START_TIMEOUT)
    except TimeoutError:
        raise ChainError(f"{child.name} did not say where it listens within {START_TIMEOUT:g} s\n{child.tail()}"
                         ) from None
    if not line.startswith(b"listening "):
        raise ChainError(f"{child.name} did not start (it printed {line[:200]!r})\n{child.tail()}")
    return int(line.rsplit(b":", 1)[1])


def free_port() -> int:
    """A port free now (for nginx, which cannot report a port it picked); a clash makes nginx exit, and the
    chain start is retried with other ports."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---- chains -------------------------------------------------------------------------------------------------


@dataclass
class Running:
    """A chain ready for load: where the load generator sends it, and the processes whose CPU is counted."""

    chain: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    servers: dict[str, Child] = field(default_factory=dict)


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    children: Children
    service_url: str
    nginx_binary: str | None = None
    gateway: dict[str, Any] = field(default_factory=dict)  # what the gateway chains need, from the federation

    async def start(self, chain: str) -> Running:
        starters: dict[str, Callable[[], Awaitable[Running]]] = {
            "direct": self.start_direct, "nginx": self.start_nginx, "relay": self.start_relay,
            "gateway": lambda: self.start_gateway("gateway", "sql"),
            "gateway-nolog": lambda: self.start_gateway("gateway-nolog", "memory"),
            "gateway-noopmon": lambda: self.start_gateway(
                "gateway-noopmon", "sql", GATEWAY_SERVER__OPMON_RECORDS="false", GATEWAY_SERVER__EXCHANGE_LOG="false"),
        }
        running = await starters[chain]()
        await self.warm_up(running)
        return running

    async def stop(self, running: Running) -> None:
        await self.children.stop(*reversed(running.servers.values()))

    async def start_direct(self) -> Running:
        return Running("direct", f"{self.service_url}/items")

    async def start_relay(self) -> Running:
        tls = self.work / "tls"
        service = self.service_url.removeprefix("http://")
        relay = [sys.executable, str(BENCH / "relay.py"), "--tls-dir", str(tls), "--listen", "127.0.0.1:0"]
        running = Running("relay", "")
        try:
            hop2 = self.children.start("relay-hop2", [*relay, "--upstream", service, "--server-tls"],
                                       pipe_stdout=True)
            running.servers["hop2"] = hop2
            port2 = await read_listening_line(hop2)
            hop1 = self.children.start("relay-hop1", [*relay, "--upstream", f"127.0.0.1:{port2}", "--upstream-tls"],
                                       pipe_stdout=True)
            running.servers["hop1"] = hop1
            running.url = f"http://127.0.0.1:{await read_listening_line(hop1)}/items"
            await self.wait_answering(running)
        except BaseException:
            await self.stop(running)
            raise
        return running

    async def start_nginx(self) -> Running:
        assert self.nginx_binary is not None
        service_port = int(self.service_url.rsplit(":", 1)[1])
        tls = MtlsFiles.in_dir(self.work / "tls")
        if os.geteuid() == 0:
            self.work.chmod(0o711)  # nginx runs as nobody (bench/nginx.py): let it through to its prefix, no more
        for attempt in range(1, 4):
            base = self.work / f"nginx-{attempt}-{time.monotonic_ns()}"
            port1, port2 = free_port(), free_port()
            second = nginx.configure(self.nginx_binary, base / "nginx2", name="nginx2", port=port2,
                                     upstream_port=service_port, tls=tls, serve_tls=True, upstream_tls=False)
            first = nginx.configure(self.nginx_binary, base / "nginx1", name="nginx1", port=port1,
                                    upstream_port=port2, tls=tls, serve_tls=False, upstream_tls=True)
            for instance in (second, first):
                if (complaint := nginx.check_config(instance)) is not None:
                    raise ChainError(f"nginx -t refused {instance.prefix / 'nginx.conf'}:\n{complaint}")
            running = Running("nginx", f"http://127.0.0.1:{port1}/items")
            try:
                for instance in (second, first):
                    running.servers[instance.name] = self.children.start(
                        instance.name, instance.command, **nginx.popen_options(instance))
                await self.wait_answering(running, error_logs=[second.error_log, first.error_log])
            except ChainError as e:
                await self.stop(running)
                logs = " ".join(p.read_text(errors="replace") for p in (second.error_log, first.error_log)
                                if p.exists())
                if "Address already in use" in logs and attempt < 3:
                    print(f"nginx: a port was taken meanwhile, trying others ({e.args[0].splitlines()[0]})")
                    continue
                raise
            except BaseException:
                await self.stop(running)
                raise
            return running
        raise AssertionError("unreachable")

    async def start_gateway(self, chain: str, backend: str, **settings: str) -> Running:
        g = self.gateway
        running = Running(chain, g["url"], headers=g["headers"])
        try:
            for code in ("ss1", "ss2"):
                env = dict(os.environ, GATEWAY_LOGGING__LEVEL="warning", GATEWAY_SERVER__MESSAGELOG_BACKEND=backend,
                           **settings)
                running.servers[code] = self.children.start(
                    f"{chain}-{code}", [g["binary"], "-c", str(g["settings"][code]), "server", "serve"], env=env)
            # both servers: ss1 answers /healthz before ss2 may be listening on its peer port
            for code in ("ss1", "ss2"):
                await self.wait_answering(running, url=f"http://127.0.0.1:{g['client_ports'][code]}/healthz",
                                          any_status=True)
        except BaseException:
            await self.stop(running)
            raise
        return running

    async def wait_answering(self, running: Running, *, url: str | None = None, any_status: bool = False,
                             error_logs: list[Path] | None = None) -> None:
        """Poll ``url`` (the chain's own by default) until it answers (200, or anything under 500 with
        ``any_status``); a process of the chain that exits meanwhile, or START_TIMEOUT, is a ChainError."""
        url = url or running.url
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer yet"
        async with aiohttp.ClientSession() as session:
            while True:
                dead = [c for c in running.servers.values() if not c.alive()]
                if dead:
                    raise ChainError(f"{running.chain}: {', '.join(c.name for c in dead)} exited while starting\n"
                                     + "\n".join(c.tail() for c in running.servers.values())
                                     + _error_log_tails(error_logs))
                try:
                    async with session.get(url, headers=running.headers) as resp:
                        body = await resp.read()
                        if resp.status == 200 or (any_status and resp.status < 500):
                            return
                        last = f"status {resp.status}: {body[:300]!r}"
                except aiohttp.ClientError as e:
                    last = repr(e)
                if time.monotonic() > deadline:
                    raise ChainError(f"{running.chain}: {url} did not answer within {START_TIMEOUT:g} s ({last})\n"
                                     + "\n".join(c.tail() for c in running.servers.values())
                                     + _error_log_tails(error_logs))
                await asyncio.sleep(0.1)

    async def warm_up(self, running: Running) -> None:
        """As many kept-alive connections through the chain as the largest closed loop uses (for the gateway:
        pooled mTLS connections between the servers), and OCSP caches and database pages warm."""
        n = max(self.args.connections)
        each = 1 if self.args.quick else 3
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def warm() -> None:
                for _ in range(each):
                    async with session.get(running.url, headers=running.headers) as resp:
                        body = await resp.read()
                        if resp.status != 200:
                            raise ChainError(f"{running.chain}: warm-up request answered {resp.status}: "
                                             f"{body[:300]!r}\n"
                                             + "\n".join(c.tail() for c in running.servers.values()))

            await asyncio.gather(*(warm() for _ in range(n)))

    async def measure(self, running: Running, round_: int, mode: str, connections: int) -> dict[str, Any]:
        args = self.args
        cmd = [sys.executable, str(BENCH / "loadgen.py"), "--url", running.url, "--mode", mode,
               "--duration", f"{args.duration:g}"]
        cmd += ["--connections", str(connections)] if mode == "closed" else ["--rate", f"{args.rate:g}"]
        for name, value in running.headers.items():
            cmd += ["--header", f"{name}:{value}"]
        before = {name: c.cpu_seconds() for name, c in running.servers.items()}
        loadgen = self.children.start("loadgen", cmd, pipe_stdout=True)
        assert loadgen.proc.stdout is not None
        out = await asyncio.to_thread(loadgen.proc.stdout.read)
        after = {name: c.cpu_seconds() for name, c in running.servers.items()}
        await self.children.stop(loadgen)
        if loadgen.proc.returncode != 0:
            raise ChainError(f"load generator failed with exit code {loadgen.proc.returncode}\n{loadgen.tail()}")
        dead = [c for c in running.servers.values() if not c.alive()]
        if dead:
            raise ChainError(f"{running.chain}: {', '.join(c.name for c in dead)} exited under load\n"
                             + "\n".join(c.tail() for c in running.servers.values()))
        r = json.loads(out.decode().strip().splitlines()[-1])
        row: dict[str, Any] = {
            "chain": running.chain, "round": round_, "mode": mode,
            "connections": connections if mode == "closed" else r["connections"],
            "rps": r["rps"], "p50_ms": r["p50_ms"], "p90_ms": r["p90_ms"], "p99_ms": r["p99_ms"],
            "errors": r["errors"], "requests": r["requests"], "seconds": r["seconds"],
            "loadgen_cpu_ms_per_request": 1000 * r["cpu_s"] / max(1, r["requests"] + r["errors"]),
            "rps_vs_relay": None,
        }
        if mode == "rate":
            row["rate"] = args.rate
        if running.servers:
            row["cpu_ms_per_exchange"] = {name: 1000 * (after[name] - before[name]) / max(1, r["requests"])
                                          for name in sorted(running.servers)}
        if running.chain.startswith("gateway"):
            per = row["cpu_ms_per_exchange"]
            row["cpu_ms_per_exchange_per_server"] = sum(per.values()) / len(per)
        return row


def _error_log_tails(paths: list[Path] | None) -> str:
    out = []
    for p in paths or ():
        if p.exists():
            lines = p.read_text(errors="replace").rstrip().splitlines()[-10:]
            out.append("\n".join([f"  --- {p}:", *(f"  {t}" for t in lines)]))
    return ("\n" + "\n".join(out)) if out else ""


# ---- figures ------------------------------------------------------------------------------------------------


def mode_label(row: dict[str, Any]) -> str:
    return f"closed {row['connections']}" if row["mode"] == "closed" else f"{row['rate']:g}/s"


def add_relay_ratios(rows: list[dict[str, Any]]) -> None:
    """``rps_vs_relay``: a closed-loop row's requests/s over relay's at the same connections in the same round."""
    relay = {(r["round"], r["connections"]): r["rps"] for r in rows if r["chain"] == "relay" and r["mode"] == "closed"}
    for r in rows:
        base = relay.get((r["round"], r["connections"]))
        if r["mode"] == "closed" and base:
            r["rps_vs_relay"] = r["rps"] / base


def text_table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'chain':14} {'round':>5} {'mode':>11} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
            f"{'errors':>7} {'vs relay':>8}  CPU ms per exchange")
    lines = [head]
    for r in rows:
        ratio = "" if r["rps_vs_relay"] is None else f"{r['rps_vs_relay']:.3f}"
        cpu = "  ".join(f"{k} {v:.3f}" for k, v in r.get("cpu_ms_per_exchange", {}).items())
        lines.append(f"{r['chain']:14} {r['round']:5d} {mode_label(r):>11} {r['rps']:9.0f} {r['p50_ms']:8.2f} "
                     f"{r['p90_ms']:8.2f} {r['p99_ms']:8.2f} {r['errors']:7d} {ratio:>8}  {cpu}")
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]], rounds: int) -> str:
    """Per chain and mode, one line per figure, one column per round."""
    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["chain"], mode_label(r)), {})[r["round"]] = r

    def cells(by_round: dict[int, dict[str, Any]], fmt: Callable[[dict[str, Any]], str]) -> str:
        return " | ".join(fmt(by_round[i]) if i in by_round else "" for i in range(1, rounds + 1))

    def errors(r: dict[str, Any]) -> str:
        return f" ({r['errors']} errors)" if r["errors"] else ""

    out = ["| chain | measure | " + " | ".join(f"round {i}" for i in range(1, rounds + 1)) + " |",
           "|---|---|" + "---|" * rounds]
    for (chain, mode), by_round in groups.items():
        if mode.startswith("closed"):
            out.append(f"| {chain} | {mode}: requests/s | "
                       + cells(by_round, lambda r: f"{r['rps']:.0f}{errors(r)}") + " |")
            out.append(f"| {chain} | {mode}: p50 / p90 / p99 ms | "
                       + cells(by_round, lambda r: f"{r['p50_ms']:.1f} / {r['p90_ms']:.1f} / {r['p99_ms']:.1f}")
                       + " |")
            if chain != "relay" and any(r["rps_vs_relay"] is not None for r in by_round.values()):
                out.append(f"| {chain} | {mode}: share of relay | " + cells(
                    by_round, lambda r: "" if r["rps_vs_relay"] is None else f"{r['rps_vs_relay']:.3f}") + " |")
        else:
            out.append(f"| {chain} | {mode}: p50 / p90 / p99 ms | " + cells(
                by_round, lambda r: f"{r['p50_ms']:.1f} / {r['p90_ms']:.1f} / {r['p99_ms']:.1f}{errors(r)}") + " |")
        if chain.startswith("gateway"):
            out.append(f"| {chain} | {mode}: CPU ms per exchange per server | "
                       + cells(by_round, lambda r: f"{r['cpu_ms_per_exchange_per_server']:.2f}") + " |")
    return "\n".join(out)


def progress(row: dict[str, Any]) -> str:
    cpu = ", ".join(f"{k} {v:.3f}" for k, v in row.get("cpu_ms_per_exchange", {}).items())
    return (f"round {row['round']} {row['chain']} {mode_label(row)}: {row['rps']:.0f} req/s, p50/p90/p99 "
            f"{row['p50_ms']:.2f}/{row['p90_ms']:.2f}/{row['p99_ms']:.2f} ms, {row['errors']} errors"
            + (f"; CPU ms per exchange: {cpu}" if cpu else "")
            + f"; load generator {row['loadgen_cpu_ms_per_request']:.3f} ms CPU per request")


# ---- the run ------------------------------------------------------------------------------------------------


async def prepare_gateway(bench: Bench, work: Path) -> Any:
    """The federation (PKI, central server, registrations), with both security servers stopped so that the
    chains can run them as processes on the ports registered centrally; returns it, to be closed at the end."""
    consumer = SubsystemId.parse("DEV/GOV/1001/consumer")
    service = ServiceId.parse("DEV/GOV/1002/registry/bench")
    fed = await start_federation(work / "fed", with_adapters=True)
    ss1, ss2 = fed.server("ss1"), fed.server("ss2")
    await ss2.store.add_service(service, url=bench.service_url)
    await ss2.store.grant(AccessRule(subject=consumer, service=service))
    ports = {}
    for code, ss in (("ss1", ss1), ("ss2", ss2)):
        ports[code] = (int(ss.client_url.rsplit(":", 1)[1]), int(ss.server_address.rsplit(":", 1)[1]))
    for ss in (ss1, ss2):
        await ss.stop()
    binary = Path(sys.executable).parent / "gateway"
    bench.gateway = {
        "binary": str(binary if binary.exists() else ROOT / ".venv/bin/gateway"),
        "settings": {code: settings_with_ports(fed.workdir / f"{code}.toml", *ports[code]) for code in ports},
        "client_ports": {code: p[0] for code, p in ports.items()},
        "headers": {"X-Road-Client": str(consumer), "Accept": "application/json"},
        "url": f"http://127.0.0.1:{ports['ss1'][0]}/r1/{service}/items",
    }
    return fed


def settings_with_ports(path: Path, client_port: int, server_port: int) -> Path:
    out = []
    for line in path.read_text().splitlines():
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


async def main(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    (work / "logs").mkdir()
    children = Children(work / "logs")
    service_runner, service_url = await json_service()
    bench = Bench(args, work, children, service_url, nginx_binary=args.nginx_binary)
    fed = None
    rows: list[dict[str, Any]] = []
    status = "failed"  # until the last chain of the last round is done
    try:
        write_mtls_files(work / "tls")
        if any(c.startswith("gateway") for c in args.chains):
            fed = await prepare_gateway(bench, work)
        print(f"payload {len(PAYLOAD)} bytes; {os.cpu_count()} CPUs; chains {', '.join(args.chains)}; "
              f"{args.rounds} round(s); closed loops at {', '.join(map(str, args.connections))} connections and "
              f"{args.rate:g}/s, {args.duration:g} s each; logs in {work / 'logs'}", flush=True)
        for round_ in range(1, args.rounds + 1):
            for chain in args.chains:
                running = await bench.start(chain)
                try:
                    for mode, conns in [*(("closed", n) for n in args.connections), ("rate", 0)]:
                        row = await bench.measure(running, round_, mode, conns)
                        rows.append(row)
                        print(progress(row), flush=True)
                finally:
                    await bench.stop(running)
        status = "complete"
    except ChainError as e:
        print(f"\nbench stopped: {e}", file=sys.stderr)
    except (asyncio.CancelledError, KeyboardInterrupt):
        status = "interrupted"
        raise
    finally:
        await children.stop_all()
        if fed is not None:
            await fed.close()
        await service_runner.cleanup()
        if args.keep_workdir or status == "failed":
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
        report(args, rows, status)
    return 0 if status == "complete" else 1


def report(args: argparse.Namespace, rows: list[dict[str, Any]], status: str) -> None:
    """Print the tables of what was measured (all of it, or what was done before a failure or an interruption),
    and write ``--json``."""
    add_relay_ratios(rows)
    table = markdown_table(rows, args.rounds)
    if rows:
        print()
        print(text_table(rows))
        print()
        print(table)
    if status != "complete":
        print(f"\n{status}: the tables hold what was measured before", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps({
            "command": shlex.join(["bench/exchange.py", *sys.argv[1:]]),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "payload_bytes": len(PAYLOAD), "chains": args.chains, "rounds": args.rounds,
            "duration_s": args.duration, "connections": args.connections, "rate": args.rate,
            "nginx": nginx.version(args.nginx_binary) if args.nginx_binary else None,
            "skipped": args.skipped, "status": status, "rows": rows, "markdown": table,
        }, indent=2) + "\n")
        print(f"\nwritten: {args.json}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", default=",".join(CHAINS),
                        help=f"comma-separated, run in this order each round (default: {','.join(CHAINS)})")
    parser.add_argument("--rounds", type=int, help="rounds, each running every chain (default 3; --quick: 1)")
    parser.add_argument("--duration", type=float,
                        help=f"seconds per measurement (default 5; --quick: {QUICK_DURATION:g})")
    parser.add_argument("--connections", default="32,128", help="closed loops, comma-separated (default 32,128)")
    parser.add_argument("--rate", type=float, default=200.0, help="open loop, requests per second (default 200)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--require-nginx", action="store_true",
                        help=f"exit with an error when nginx is missing, instead of skipping its chain "
                             f"({nginx.INSTALL_HINT})")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke check: one round, short measurements, one warm-up request per connection")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the temporary directory (logs, databases)")
    args = parser.parse_args(argv)
    chains = [c.strip() for c in args.chains.split(",") if c.strip()]
    unknown = [c for c in chains if c not in CHAINS + EXTRA_CHAINS]
    if unknown or not chains:
        parser.error(f"--chains: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                     f"choose from {', '.join(CHAINS + EXTRA_CHAINS)}")
    if len(set(chains)) != len(chains):
        parser.error(f"--chains: {args.chains!r} names a chain twice")
    try:
        args.connections = [int(n) for n in args.connections.split(",")]
    except ValueError:
        parser.error(f"--connections: {args.connections!r} is not a comma-separated list of integers")
    if not args.connections or min(args.connections) < 1:
        parser.error("--connections: each must be at least 1")
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    args.duration = args.duration if args.duration is not None else (QUICK_DURATION if args.quick else 5.0)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.duration <= 0 or args.rate <= 0:
        parser.error("--duration and --rate must be above 0")
    args.skipped = {}
    args.nginx_binary = nginx.find_nginx() if "nginx" in chains else None
    if "nginx" in chains and args.nginx_binary is None:
        message = f"no nginx binary on PATH or in /usr/sbin ({nginx.INSTALL_HINT})"
        if args.require_nginx:
            parser.exit(2, f"bench/exchange.py: --require-nginx: {message}\n")
        print(f"nginx chain skipped: {message}", flush=True)
        args.skipped["nginx"] = message
        chains.remove("nginx")
        if not chains:
            parser.exit(2, "bench/exchange.py: no chain left to run\n")
    args.chains = chains
    return args


if __name__ == "__main__":
    a = parse_args()
    try:
        code = run(main(a))
    except KeyboardInterrupt:
        print("interrupted; every process the bench started is stopped", file=sys.stderr)
        code = 130
    except asyncio.CancelledError:  # SIGTERM
        print("terminated; every process the bench started is stopped", file=sys.stderr)
        code = 143
    sys.exit(code)
