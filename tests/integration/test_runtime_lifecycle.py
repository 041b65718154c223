"""A security server's resources over its life (real sockets, SQLite and PostgreSQL): a ``start()`` that fails
halfway closes exactly what it had opened, and ``stop()`` closes everything and may be called again (releasing
what was reopened since).

The keys, anchor and cached global configuration come from ``gateway.dev.demo``'s federation, which is closed
before the server under test starts, so that every socket, connection and task seen afterwards is that server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import asyncpg
import pytest
from conftest import PG_DSN
from sqlalchemy.engine import make_url

from gateway.dev.demo import start_federation
from gateway.errors import ConfigError
from gateway.server import runtime
from gateway.server.runtime import SecurityServer

pytestmark = pytest.mark.integration

PORTS = ("server_port", "client_port", "client_https_port", "admin_port")  # the order start() opens them


def _free_port() -> int:
    """A port that is free now and that the kernel does not hand out for port 0 (it is below the ephemeral range),
    so that a socket another test binds to port 0 in the meantime cannot take it (seen once: "address already in
    use" between this choice and the server's bind). Tests that need fixed ports choose them this way."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


def _bindable(port: int) -> bool:
    """Whether nothing holds ``port`` on 127.0.0.1 (a plain bind, without SO_REUSEADDR)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _hold(stack: ExitStack, port: int) -> None:
    """Listen on ``port`` until the test ends, so that the server cannot bind it."""
    s = stack.enter_context(socket.socket())
    s.bind(("127.0.0.1", port))
    s.listen()


async def _open_connections(database_url: str) -> int:
    """Connections open to the database: file descriptors of this process on the SQLite file (and its WAL and
    shared-memory files), or PostgreSQL backends serving the database, other than the one asking."""
    url = make_url(database_url)
    if url.drivername.startswith("sqlite"):
        db = str(Path(str(url.database)).resolve())
        fds = Path("/proc/self/fd")
        return sum(1 for fd in fds.iterdir() if os.path.realpath(fd).startswith(db))
    conn = await asyncpg.connect(PG_DSN)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", url.database)
    finally:
        await conn.close()
    return int(count)


async def _open_connections_settled(database_url: str) -> int:
    """:func:`_open_connections` once it reaches 0, or after 5 s: a PostgreSQL backend leaves
    pg_stat_activity a moment after its client has closed the connection."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while (count := await _open_connections(database_url)) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return count


def _fail_after_the_tasks_started(seen: set[str]) -> Any:
    """An ``update_expiry_gauge`` that notes the tasks running at that point of start() and then fails."""
    def fail(*_args: object, **_kwargs: object) -> None:
        seen.update(t.get_name() for t in asyncio.all_tasks())
        raise RuntimeError("injected failure after the background tasks started")
    return fail


# failure, key store, the error start() raises (None: start() succeeds) and its message, the tasks running then
CASES = [
    pytest.param(None, "files", None, "", set(), id="started-then-stopped"),
    pytest.param("server_port", "files", ConfigError, "cannot listen on 127.0.0.1:", set(), id="server-port-taken"),
    pytest.param("admin_port", "files", ConfigError, "cannot listen on 127.0.0.1:", set(), id="admin-port-taken"),
    pytest.param("spool_dir", "files", ConfigError,
                 r"\[server\] spool_dir: spool directory .*: mode 0755 lets others in; it must be 0700", set(),
                 id="spool-dir-open-to-others"),
    pytest.param("tasks", "token", RuntimeError, "injected failure",
                 {"globalconf-poll", "serverconf-reload", "token-watch"}, id="failure-after-background-tasks"),
]


@pytest.fixture
def held_ports() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.mark.parametrize(("failure", "key_store", "error", "message", "tasks_running"), CASES)
async def test_start_failing_halfway_leaves_nothing_open_and_stop_is_idempotent(
    tmp_path: Path, database_url: str, held_ports: ExitStack, monkeypatch: pytest.MonkeyPatch,
    failure: str | None, key_store: Literal["files", "token"], error: type[Exception] | None, message: str,
    tasks_running: set[str],
) -> None:
    unused = {"persons": "http://127.0.0.1:9", "companies": "http://127.0.0.1:9"}  # ss2's; nothing calls them
    fed = await start_federation(tmp_path / "fed", with_adapters=False, adapter_urls=unused, key_store=key_store)
    settings = fed.server("ss1").settings
    await fed.close()
    ports = {name: _free_port() for name in PORTS}
    settings = dataclasses.replace(settings, server=dataclasses.replace(
        settings.server, database_url=database_url, **ports))
    if failure in PORTS:
        _hold(held_ports, ports[failure])
    if failure == "spool_dir":  # a directory others may enter: refused before any port opens
        spool = tmp_path / "open-spool"
        spool.mkdir()
        spool.chmod(0o755)
        settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, spool_dir=str(spool)))
    seen: set[str] = set()
    if failure == "tasks":
        monkeypatch.setattr(runtime, "update_expiry_gauge", _fail_after_the_tasks_started(seen))
    before = asyncio.all_tasks()
    server = SecurityServer(settings)

    if error is None:
        await server.start()
        assert server.admin_url == f"http://127.0.0.1:{ports['admin_port']}"
        assert not any(_bindable(port) for port in ports.values())
        await server.stop()
    else:
        with pytest.raises(error, match=message):
            await server.start()
        assert tasks_running <= seen
    assert asyncio.all_tasks() - before == set()
    if failure == "admin_port":  # the ports opened before the admin port's had been listening
        assert server.client_url == f"http://127.0.0.1:{ports['client_port']}"
    # A stopped server's message log can still be read (tests and tools do); the connection this opens is
    # released by the next stop(), which is otherwise harmless.
    await server.messagelog.read(str(server.server_id), limit=1)
    assert await _open_connections(database_url) > 0
    await server.stop()

    assert [name for name, port in ports.items() if name != failure and not _bindable(port)] == []
    assert await _open_connections_settled(database_url) == 0
    assert server.http.closed
    assert asyncio.all_tasks() - before == set()
