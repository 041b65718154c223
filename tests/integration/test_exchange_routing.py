"""Routing to a provider with several security servers (issue item 6): ss2 and ss3 both host
DEV/GOV/1002/registry with the same services. The consumer's server prefers the one that connects first,
fails over when one is down, and obeys ``X-Road-Security-Server``; with both down the client gets
``Server.ClientProxy.NetworkError``.

Each test starts its own federation (about half a second): stopping servers is not undone.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from exchange_kit import Answer, call, kinds, records

from gateway.dev.demo import Federation, MemberSpec, ServerSpec, default_layout, start_federation
from gateway.server.runtime import SecurityServer

pytestmark = pytest.mark.integration

PERSONS = "DEV/GOV/1002/registry/persons"


def _layout() -> tuple[list[MemberSpec], list[ServerSpec]]:
    members, servers = default_layout()
    ss2 = servers[1]
    ss3 = ServerSpec(id=ss2.id.owner.server("ss3"), clients=ss2.clients, services=dict(ss2.services))
    return members, [*servers, ss3]


@pytest_asyncio.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    federation = await start_federation(tmp_path / "fed", layout=_layout())
    try:
        yield federation
    finally:
        await federation.close()


async def _persons(ss1: SecurityServer, *, pin: str | None = None) -> tuple[str, Answer]:
    message_id = f"DEV-route-{uuid.uuid4()}"
    headers = {"X-Road-Id": message_id, "Accept": "application/json"}
    if pin is not None:
        headers["X-Road-Security-Server"] = f"DEV/GOV/1002/{pin}"
    return message_id, await call(ss1, f"{PERSONS}/?limit=1", headers=headers)


async def _served_by(fed: Federation, message_id: str) -> list[str]:
    """Which provider servers logged the exchange (request and signed response)."""
    out = []
    for code in ("ss2", "ss3"):
        server = fed.server(code)
        recs = await records(server, message_id=message_id) if server.context is not None else []
        if recs:
            assert kinds(recs) == [("request", None), ("response", 200)]
            out.append(code)
    return out


async def test_both_provider_servers_are_registered_and_either_serves(fed: Federation) -> None:
    conf = fed.server("ss1").globalconf.current
    assert conf is not None
    hosts = {str(s.id) for s in conf.servers_for_client(fed.specs[1].clients[0])}
    assert hosts == {"DEV/GOV/1002/ss2", "DEV/GOV/1002/ss3"}
    message_id, answer = await _persons(fed.server("ss1"))
    assert answer.status == 200, answer.body
    assert len(await _served_by(fed, message_id)) == 1


@pytest.mark.parametrize("pin", ["ss2", "ss3"])
async def test_security_server_header_pins_the_provider_server(fed: Federation, pin: str) -> None:
    ss1 = fed.server("ss1")
    for _ in range(3):
        message_id, answer = await _persons(ss1, pin=pin)
        assert answer.status == 200, answer.body
        assert await _served_by(fed, message_id) == [pin]
        # the pin is signed and logged on both sides
        for server in (ss1, fed.server(pin)):
            [request, _] = await records(server, message_id=message_id)
            assert f'"x-road-security-server": DEV/GOV/1002/{pin}'.encode() in request.signature_base


async def test_failover_to_the_other_server_when_the_preferred_one_stops(fed: Federation) -> None:
    ss1 = fed.server("ss1")
    message_id, answer = await _persons(ss1)
    assert answer.status == 200, answer.body
    [preferred] = await _served_by(fed, message_id)
    other = "ss3" if preferred == "ss2" else "ss2"
    await fed.server(preferred).stop()
    for _ in range(2):  # the remembered "fastest" server is gone: fail over, then prefer the other
        message_id, answer = await _persons(ss1)
        assert answer.status == 200, answer.body
        assert await _served_by(fed, message_id) == [other]
        assert kinds(await records(ss1, message_id=message_id)) == [("request", None), ("response", 200)]


async def test_pinned_server_down_is_a_network_error_without_failover(fed: Federation) -> None:
    ss1 = fed.server("ss1")
    await fed.server("ss3").stop()
    message_id, answer = await _persons(ss1, pin="ss3")
    answer.assert_error(500, "Server.ClientProxy.NetworkError", contains="could be reached")
    assert await _served_by(fed, message_id) == []  # ss2 was not asked although it is up
    assert kinds(await records(ss1, message_id=message_id)) == [("request", None)]
    # unpinned, the same request goes to ss2
    message_id, answer = await _persons(ss1)
    assert answer.status == 200, answer.body
    assert await _served_by(fed, message_id) == ["ss2"]


async def test_both_provider_servers_down_is_a_network_error(fed: Federation) -> None:
    ss1 = fed.server("ss1")
    assert (await _persons(ss1))[1].status == 200  # a pooled connection and a remembered winner exist
    await fed.server("ss2").stop()
    await fed.server("ss3").stop()
    message_id, answer = await _persons(ss1)
    answer.assert_error(500, "Server.ClientProxy.NetworkError",
                        contains="no security server of DEV/GOV/1002/registry could be reached")
    # the signed request was logged before sending; no response was ever accepted
    assert kinds(await records(ss1, message_id=message_id)) == [("request", None)]
