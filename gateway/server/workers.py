"""Several worker processes of one security server node, supervised (I/O).

``[server] workers = N`` with N > 1: ``gateway server serve`` becomes a supervisor that runs N worker
processes (``python -m gateway ... server serve --worker K``) and serves nothing itself (docs/operations.md,
"Several workers"):

1. **Ports.** Every worker listens on the same client, client HTTPS and server ports with ``SO_REUSEPORT``;
   the kernel spreads new connections over them. A port set to 0 is chosen once, by the supervisor, which
   keeps a bound socket on it (bound, never listening: it takes no connections) so that a restarted worker
   gets the same port back. The admin API runs in worker 0 only (its port is likewise fixed by the
   supervisor); what it changes reaches the other workers through the database and the token's files.
2. **Start.** Worker 0 starts first and alone (it migrates the database and writes the internal TLS
   certificate if missing), then the others together. Each tells the supervisor that it listens, and where,
   with one JSON line on a socket pair; once all have, the supervisor prints the same line that a single
   process prints. A worker that fails to start stops the start: every worker is stopped and the exit code
   is that worker's (2 for bad settings).
3. **Supervision.** A worker that exits while the node runs is started again, with the same index and so the
   same log origin (:mod:`gateway.messagelog.origins`), after a delay that doubles with each failure in a row
   (from :data:`RESTART_DELAY_SECONDS` up to :data:`MAX_RESTART_DELAY_SECONDS`; a worker that has run
   :data:`STABLE_SECONDS` starts from the shortest again). The old process has exited before its successor
   starts, so its claim on the origin (:mod:`gateway.server.lease`) is free.
4. **Stop.** SIGTERM or SIGINT to the supervisor sends SIGTERM to every worker and waits for each to close
   (draining requests, flushing its log); after :data:`STOP_TIMEOUT_SECONDS` a worker still running is
   killed. If the supervisor itself dies, each worker sees its end of the socket pair close and stops.
5. **Metrics.** Every worker writes its metrics to ``<state_dir>/metrics`` (prometheus-client's multiprocess
   mode, :mod:`gateway.ops.metrics`), made 0700 and emptied before the first worker starts; the live gauges of
   a worker that exited are dropped before it is started again. Any worker answers a scrape of the shared ops
   port with the node's totals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from gateway.errors import ConfigError
from gateway.ops.metrics import MULTIPROC_ENV, mark_worker_dead, prepare_multiprocess_dir
from gateway.settings import Settings

log = structlog.get_logger("gateway.server.workers")

RESTART_DELAY_SECONDS = 0.5  # seconds before the first restart of a worker that exited
MAX_RESTART_DELAY_SECONDS = 30.0  # seconds; the delay doubles per failure in a row up to this
STABLE_SECONDS = 60.0  # seconds a worker must run for its next restart to wait the shortest delay again
START_TIMEOUT_SECONDS = 120.0  # seconds a worker may take to listen
STOP_TIMEOUT_SECONDS = 30.0  # seconds a worker may take to stop after SIGTERM before it is killed
_PORTS = ("client_port", "client_https_port", "server_port", "admin_port", "ops_port")


@dataclass(slots=True)
class _Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    channel: asyncio.StreamWriter | None = None  # the supervisor's end of the socket pair
    started_at: float = 0.0
    failures: int = 0  # exits in a row without STABLE_SECONDS of running
    ready: dict[str, Any] = field(default_factory=dict)


def reserve_ports(settings: Settings) -> tuple[dict[str, int], list[socket.socket]]:
    """A concrete port for every port setting that is 0, each held by a bound ``SO_REUSEPORT`` socket.

    Raises:
        ConfigError: a port cannot be bound.
    """
    s = settings.server
    ports: dict[str, int] = {}
    held: list[socket.socket] = []
    for key in _PORTS:
        port = getattr(s, key)
        if port != 0:
            continue
        hosts = {"admin_port": s.admin_host, "server_port": s.server_host, "ops_port": s.ops_host}
        host = hosts.get(key, s.client_host)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, 0))
        except OSError as e:
            sock.close()
            for h in held:
                h.close()
            raise ConfigError(f"cannot reserve a port on {host} for [server] {key}: {e.strerror or e}") from e
        held.append(sock)
        ports[key] = int(sock.getsockname()[1])
    return ports, held


class Supervisor:
    """Runs and supervises the workers of one node (module docstring): ``await run(stop)``."""

    def __init__(
        self, settings: Settings, *, command: Sequence[str], env: dict[str, str] | None = None,
        announce: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.count = settings.server.workers
        self._command = list(command)  # the worker's command line, without --worker and --channel
        self._env = dict(os.environ if env is None else env)
        self._announce = announce
        self.workers = [_Worker(i) for i in range(self.count)]
        self.restarts = 0  # workers started again after they exited
        self._held: list[socket.socket] = []
        self._stopping = False
        self.metrics_dir = Path(settings.server.state_dir) / "metrics"  # emptied by run()

    async def run(self, stop: asyncio.Event) -> int:
        """Start every worker, supervise them until ``stop`` is set, then stop them; the exit code.

        Raises:
            ConfigError: a port cannot be reserved.
        """
        ports, self._held = reserve_ports(self.settings)
        try:
            self.metrics_dir = prepare_multiprocess_dir(Path(self.settings.server.state_dir) / "metrics")
        except OSError as e:
            raise ConfigError(f"cannot prepare the metrics directory in [server] state_dir: {e}") from e
        self._env[MULTIPROC_ENV] = str(self.metrics_dir)
        for key, port in ports.items():
            self._env[f"GATEWAY_SERVER__{key.upper()}"] = str(port)
        try:
            # (2) worker 0 alone, then the others together
            code = await self._start(self.workers[:1])
            if code == 0 and self.count > 1:
                code = await self._start(self.workers[1:])
            if code != 0:
                return code
            self._announce(self._line())
            # (3) supervise until told to stop
            await self._supervise(stop)
            return 0
        finally:
            # (4) stop every worker
            self._stopping = True
            await asyncio.gather(*(self._stop_worker(w) for w in self.workers))
            for sock in self._held:
                sock.close()

    async def _start(self, workers: Sequence[_Worker]) -> int:
        results = await asyncio.gather(*(self._spawn(w) for w in workers))
        return next((rc for rc in results if rc != 0), 0)

    async def _spawn(self, w: _Worker) -> int:
        """Start worker ``w`` and wait until it listens; 0, or the exit code of a worker that did not start."""
        mine, theirs = socket.socketpair()
        try:
            w.proc = await asyncio.create_subprocess_exec(
                *self._command, "--worker", str(w.index), "--channel", str(theirs.fileno()),
                pass_fds=(theirs.fileno(),), env=self._env, stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        w.started_at = time.monotonic()
        reader, w.channel = await asyncio.open_connection(sock=mine)  # open while the worker runs
        timed_out = False
        try:
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                line = await reader.readline()
        except TimeoutError:
            line, timed_out = b"", True
        except OSError:
            line = b""
        if not line:
            # End of the channel: the worker has exited (signalling it now could reap it under the event loop's
            # child watcher, which would then report 255); only a worker that never answered is killed.
            if timed_out and w.proc.returncode is None:
                w.proc.kill()
            rc = await w.proc.wait()
            self._close_channel(w)
            log.error("worker did not start", worker=w.index, exit_code=rc)
            return rc if rc > 0 else 1
        w.ready = json.loads(line)
        log.info("worker started", worker=w.index, pid=w.proc.pid, origin=w.ready.get("origin"))
        return 0

    @staticmethod
    def _close_channel(w: _Worker) -> None:
        if w.channel is not None:
            w.channel.close()
            w.channel = None

    def _line(self) -> str:
        """What a single process prints once it listens, plus the number of workers."""
        r = self.workers[0].ready
        https = r.get("client_https_url") or ""
        admin = r.get("admin_url") or ""
        return (f"security server {r.get('server')}: clients {r.get('client_url')}"
                f"{' and ' + https if https else ''}, peers {r.get('server_address')}"
                f"{', admin ' + admin if admin else ''}, workers {self.count}")

    async def _supervise(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set: each worker watched by a task of its own, so that one worker's restart
        delay never holds up another's."""
        watchers = [asyncio.create_task(self._watch(w, stop), name=f"watch-worker-{w.index}") for w in self.workers]
        try:
            await stop.wait()
        finally:
            for t in watchers:
                t.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    async def _watch(self, w: _Worker, stop: asyncio.Event) -> None:
        while not stop.is_set():
            assert w.proc is not None
            await w.proc.wait()
            mark_worker_dead(self.metrics_dir, w.proc.pid)
            if stop.is_set():
                return
            await self._restart(w, stop)

    async def _restart(self, w: _Worker, stop: asyncio.Event) -> None:
        assert w.proc is not None
        rc = w.proc.returncode
        ran = time.monotonic() - w.started_at
        w.failures = 0 if ran >= STABLE_SECONDS else w.failures + 1
        delay = min(MAX_RESTART_DELAY_SECONDS, RESTART_DELAY_SECONDS * 2 ** max(0, w.failures - 1))
        log.error("worker exited; starting it again", worker=w.index, pid=w.proc.pid, exit_code=rc,
                  ran_seconds=round(ran, 1), restart_in_seconds=delay)
        self._close_channel(w)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)  # a restart policy, not a synchronisation
        if stop.is_set():
            return
        code = await self._spawn(w)
        if code == 0:
            self.restarts += 1

    async def _stop_worker(self, w: _Worker) -> None:
        proc = w.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                    await proc.wait()
            except TimeoutError:
                log.error("worker did not stop in time; killing it", worker=w.index, pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._close_channel(w)


def worker_command(config: str | None) -> list[str]:
    """The command line that runs a worker of this node (the supervisor appends ``--worker`` and ``--channel``)."""
    cmd = [sys.executable, "-m", "gateway"]
    if config:
        cmd += ["-c", config]
    return [*cmd, "server", "serve"]


async def report_ready(channel_fd: int, info: dict[str, Any]) -> asyncio.Event:
    """Worker side: tell the supervisor that we listen (one JSON line on the channel); the event returned is
    set when the channel closes, that is when the supervisor is gone."""
    sock = socket.socket(fileno=channel_fd)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(json.dumps(info).encode() + b"\n")
    await writer.drain()
    gone = asyncio.Event()

    async def watch() -> None:
        with contextlib.suppress(OSError):
            await reader.read()  # nothing is ever sent: returns at EOF
        gone.set()
        writer.close()

    task = asyncio.get_running_loop().create_task(watch(), name="supervisor-watch")
    _KEEP.add(task)
    task.add_done_callback(_KEEP.discard)
    return gone


_KEEP: set[asyncio.Task[None]] = set()

__all__ = [
    "MAX_RESTART_DELAY_SECONDS",
    "RESTART_DELAY_SECONDS",
    "STABLE_SECONDS",
    "STOP_TIMEOUT_SECONDS",
    "Supervisor",
    "report_ready",
    "reserve_ports",
    "worker_command",
]
