"""Adapters on 127.0.0.1 with an HTTP client to call them: what the adapter tests share (I/O)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from adapters.server import RunningAdapters, start_adapters
from gateway.adapterapi import ServiceAdapter


@dataclass
class AdapterClient:
    """Running adapters, a client session and the person rows their datasets were made from."""

    running: RunningAdapters
    http: aiohttp.ClientSession
    persons: list[dict[str, Any]]

    def url(self, path: str) -> str:
        return self.running.base_url + path

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.url(path)) as resp:
            return resp.status, await resp.json()


@contextlib.asynccontextmanager
async def serve_adapters(
    adapters: Mapping[str, ServiceAdapter], *, persons: list[dict[str, Any]]
) -> AsyncIterator[AdapterClient]:
    """Start ``adapters`` on a free port of 127.0.0.1; closed afterwards."""
    running = await start_adapters(adapters, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            yield AdapterClient(running=running, http=http, persons=persons)
    finally:
        await running.close()
