"""``[server] body_logging = false`` and ``messagelog_backend = "memory"`` on a real federation (loopback, TLS):
the message logs of both servers keep each message's signed digest but not its body, and the digest verifies
against the bodies that went through; the in-memory log is announced loudly at start."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from gateway.dev.demo import Federation, start_federation
from gateway.identifiers import ServiceId, SubsystemId
from gateway.messagelog.record import LogRecord
from gateway.messagelog.store import MemoryMessageLogStore
from gateway.protocol import signatures
from gateway.server.runtime import SecurityServer
from gateway.serverconf.access import AccessRule

pytestmark = pytest.mark.integration

CONSUMER = SubsystemId.parse("DEV/GOV/1001/consumer")
SERVICE = ServiceId.parse("DEV/GOV/1002/registry/echo")
ANSWER = b'{"answer":"kept out of the log"}'


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def fed(tmp_path: Path, echo: str) -> AsyncIterator[tuple[Federation, list[dict[str, Any]]]]:
    """The federation with both settings on its servers, and what it logged while starting."""
    with structlog.testing.capture_logs() as started:
        federation = await start_federation(
            tmp_path / "fed", server_overrides={"body_logging": False, "messagelog_backend": "memory"},
        )
    try:
        ss2 = federation.server("ss2")
        await ss2.store.add_service(SERVICE, url=echo)
        await ss2.store.grant(AccessRule(subject=CONSUMER, service=SERVICE))
        await ss2.reload_serverconf()
        yield federation, started
    finally:
        await federation.close()


async def logged(ss: SecurityServer, request_id: str) -> list[LogRecord]:
    found = await ss.messagelog.read(str(ss.server_id), start=0, limit=1000)
    return [r.decode() for r in found if r.decode().request_id == request_id]


async def test_only_digests_are_logged_and_they_verify(fed: tuple[Federation, list[dict[str, Any]]]) -> None:
    federation, started = fed
    sent = b'{"question":"also kept out"}'
    ss1, ss2 = federation.server("ss1"), federation.server("ss2")
    async with aiohttp.ClientSession() as http, http.post(
        f"{ss1.client_url}/r1/{SERVICE}/ask", data=sent,
        headers={"X-Road-Client": str(CONSUMER), "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.read() == ANSWER
        request_id = resp.headers["X-Road-Request-Id"]
    for ss, side in ((ss1, "client"), (ss2, "server")):
        assert isinstance(ss.messagelog, MemoryMessageLogStore)
        request, response = await logged(ss, request_id)
        assert (request.kind, response.kind, request.side) == ("request", "response", side)
        for record, body in ((request, sent), (response, ANSWER)):
            assert record.body is None
            # the digest kept is the one signed, and it is the digest of the body that went through
            signatures.verify_content_digest(record.body_digest, hashlib.sha256(body).digest())
            assert f'"content-digest": {record.body_digest}'.encode() in record.signature_base
    # each server said so at start, loudly for the log that is not durable
    memory = [e for e in started if e["event"].startswith("MESSAGE LOG IN MEMORY")]
    assert [e["log_level"] for e in memory] == ["warning", "warning"]
    assert "for benchmarks only" in memory[0]["event"]
    assert len([e for e in started if e["event"].startswith("body logging is off")]) == 2
