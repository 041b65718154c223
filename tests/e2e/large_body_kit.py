"""A federation whose two security servers run as processes of their own, for large bodies: the test
(tests/e2e/test_large_body.py) and the benchmark (bench/large_body.py) share it.

- :class:`HashingService`: the service behind the provider; it reads the request body as it comes, hashes it,
  and answers a body of the size asked for (query ``size``), generated as it is written, with the request
  body's SHA-256 in ``X-Body-Sha256``;
- :func:`large_body_federation`: the PKI, central server and that service in this event loop, ss1 (consumer)
  and ss2 (provider) as ``gateway server serve`` processes, with ``max_body_bytes`` raised;
- :func:`send`: one exchange with a request body streamed from this process (chunked), the response read as
  it comes; each server process's peak RSS growth (VmHWM after ``clear_refs`` 5) over it;
- :func:`logged_bodies`: the SHA-256 of every body a server's log holds apart, by (request id, kind), each
  checked against its record's leaf hash as it is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from process_kit import CONSUMER, PERSONS, serve_process

from gateway.dev.demo import start_federation
from gateway.messagelog.store import SqlMessageLogStore
from gateway.storage.db import make_engine

BLOCK = 1 * 2**20  # bytes per chunk written by the sender and by the service
ORIGINS = {"ss1": "DEV/GOV/1001/ss1", "ss2": "DEV/GOV/1002/ss2"}


def block(seed: int) -> bytes:
    """1 MiB of bytes that differ per seed (so that a body is not one block repeated)."""
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(BLOCK)


async def blocks(size: int) -> AsyncIterator[bytes]:
    """``size`` bytes, block by block."""
    sent = 0
    n = 0
    while sent < size:
        chunk = block(n)[: size - sent]
        sent += len(chunk)
        n += 1
        yield chunk


def body_sha256(size: int) -> str:
    """The SHA-256 (hex) of the body :func:`blocks` gives for ``size``."""
    h = hashlib.sha256()
    sent = n = 0
    while sent < size:
        chunk = block(n)[: size - sent]
        h.update(chunk)
        sent += len(chunk)
        n += 1
    return h.hexdigest()


class HashingService:
    """See the module docstring."""

    def __init__(self) -> None:
        self.url = ""
        self.received: list[tuple[int, str]] = []  # (size, SHA-256 hex) of each request body
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        h = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(BLOCK):
            h.update(chunk)
            size += len(chunk)
        self.received.append((size, h.hexdigest()))
        answer = int(request.query.get("size", "0"))
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                           "X-Body-Sha256": h.hexdigest()})
        resp.content_length = answer
        await resp.prepare(request)
        async for chunk in blocks(answer):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def start(self) -> HashingService:
        app = web.Application(client_max_size=2**40)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass(frozen=True, slots=True, kw_only=True)
class Running:
    client_url: str
    pids: dict[str, int]  # server code -> process id
    databases: dict[str, str]  # server code -> database URL
    settings: dict[str, Path]  # server code -> its process's settings file


def _process_settings(text: str, *, client_port: str, server_port: str) -> str:
    text = re.sub(r"(?m)^client_port = .*$", f"client_port = {client_port}", text)
    text = re.sub(r"(?m)^server_port = .*$", f"server_port = {server_port}", text)
    text = re.sub(r"(?m)^ops_port = .*$", "ops_port = -1", text)
    return re.sub(r"(?m)^client_https_port = .*$", "client_https_port = -1", text)


@contextlib.asynccontextmanager
async def large_body_federation(
    tmp: Path, service: HashingService, *, max_body_bytes: int, body_logging: bool = True,
) -> AsyncIterator[Running]:
    """See the module docstring; the servers' body budget stays at 8 MiB, far below ``max_body_bytes``."""
    overrides = {"max_body_bytes": max_body_bytes, "max_loggable_body_bytes": max_body_bytes,
                 "max_inflight_body_bytes": 8 * 2**20, "body_logging": body_logging,
                 "checkpoint_interval_seconds": 0.2}
    fed = await start_federation(tmp / "fed", server_overrides=overrides, with_adapters=False,
                                 adapter_urls={"persons": service.url, "companies": service.url})
    try:
        servers = {code: fed.server(code) for code in ("ss1", "ss2")}
        settings: dict[str, Path] = {}
        client_url = servers["ss1"].client_url
        for code, ss in servers.items():
            client_port = ss.client_url.rsplit(":", 1)[1]
            server_port = ss.server_address.rsplit(":", 1)[1]
            await ss.stop()
            settings[code] = tmp / f"{code}-process.toml"
            settings[code].write_text(_process_settings((fed.workdir / f"{code}.toml").read_text(),
                                                        client_port=client_port, server_port=server_port))
        databases = {code: ss.settings.server.database_url for code, ss in servers.items()}
        async with (
            serve_process(settings["ss2"], tmp / "ss2.stderr") as (ss2, _),
            serve_process(settings["ss1"], tmp / "ss1.stderr") as (ss1, _),
        ):
            yield Running(client_url=client_url, pids={"ss1": ss1.pid, "ss2": ss2.pid}, databases=databases,
                          settings=settings)
    finally:
        await fed.close()


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent:
    status: int
    request_id: str
    service_saw: str  # the request body's SHA-256 as the service computed it
    response_sha256: str
    response_size: int
    rss_growth: dict[str, int]  # server code -> bytes of peak RSS growth over the exchange
    seconds: float


async def send(running: Running, *, request_size: int, response_size: int) -> Sent:
    """One exchange (POST, the request body chunked from this process), measured (module docstring)."""
    baseline: dict[str, int] = {}
    for code, pid in running.pids.items():
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        baseline[code] = _status_kib(pid, "VmHWM")
    started = time.perf_counter()
    h = hashlib.sha256()
    size = 0
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
        f"{running.client_url}/r1/{PERSONS}/upload?size={response_size}", data=blocks(request_size),
        headers={"X-Road-Client": CONSUMER, "Content-Type": "application/octet-stream"},
    ) as resp:
        async for chunk in resp.content.iter_chunked(BLOCK):
            h.update(chunk)
            size += len(chunk)
        status = resp.status
        request_id = resp.headers.get("X-Road-Request-Id", "")
        saw = resp.headers.get("X-Body-Sha256", "")
    seconds = time.perf_counter() - started
    growth = {code: (_status_kib(pid, "VmHWM") - baseline[code]) * 1024 for code, pid in running.pids.items()}
    return Sent(status=status, request_id=request_id, service_saw=saw, response_sha256=h.hexdigest(),
                response_size=size, rss_growth=growth, seconds=seconds)


async def logged_bodies(database_url: str, origin: str) -> dict[tuple[str, str], str]:
    """``{(request id, kind): SHA-256 hex}`` of every body stored apart in ``origin``'s log; each record's
    encoding with its body is checked against its leaf hash on the way (``encoded_chunks``)."""
    engine = make_engine(database_url)
    store = SqlMessageLogStore(engine)
    out: dict[tuple[str, str], str] = {}
    try:
        size = await store.size(origin)
        for start in range(0, size, 1000):
            for stored in await store.read(origin, start=start, limit=1000):
                if stored.body_ref is None:
                    continue
                async for _ in store.encoded_chunks(stored, check=True):
                    pass
                h = hashlib.sha256()
                async for chunk in store.body_chunks(stored):
                    h.update(chunk)
                record = stored.decode()
                out[(record.request_id, record.kind)] = h.hexdigest()
    finally:
        await store.close()
        await engine.dispose()
    return out
