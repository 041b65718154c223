"""Reading a running server's ops port in tests: a scrape parsed into samples, ``/readyz`` as JSON, and
``promtool check metrics`` on a scrape (real HTTP on loopback, the real promtool); and
:class:`HangingResponder`, a TCP server that accepts and never answers (an OCSP responder or TSA that hangs)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(ops_url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{ops_url}/metrics") as resp:
        assert resp.status == 200, resp.status
        assert resp.headers["Content-Type"].startswith("text/plain"), resp.headers["Content-Type"]
        return await resp.text()


def samples(text: str) -> Samples:
    """Every sample of a scrape, keyed by (sample name, label set)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` (exactly those labels), 0 if absent (a counter not yet incremented)."""
    return found.get((name, frozenset(labels.items())), 0.0)


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over every series whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= ls)


async def readyz(ops_url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{ops_url}/readyz") as resp:
        return resp.status, await resp.json()


async def promtool_check(text: str) -> tuple[int, str]:
    """``promtool check metrics`` on ``text``: its exit code and everything it printed."""
    proc = await asyncio.create_subprocess_exec(
        "promtool", "check", "metrics", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(text.encode())
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@dataclass
class HangingResponder:
    """Accepts TCP connections and reads what comes, but never answers (until closed)."""

    url: str = ""
    accepted: int = 0
    open: int = 0
    _server: asyncio.Server | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        try:
            reader_task = asyncio.ensure_future(reader.read())  # until the client gives up and closes
            release = asyncio.ensure_future(self._release.wait())
            await asyncio.wait([reader_task, release], return_when=asyncio.FIRST_COMPLETED)
            reader_task.cancel()
            release.cancel()
        finally:
            self.open -= 1
            writer.close()

    async def start(self) -> HangingResponder:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def close(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
