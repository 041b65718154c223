"""Readiness for systemd's ``Type=notify`` (gateway/sdnotify.py): ``gateway server serve`` (one process, or a
supervisor of workers) and ``gateway central serve`` send ``READY=1`` to ``NOTIFY_SOCKET`` once their ports
listen, from the main process, and ``STOPPING=1`` on SIGTERM. The test plays the service manager: a Unix
datagram socket with ``SO_PASSCRED``, so that each message comes with the sender's process id."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from process_kit import GATEWAY, START_TIMEOUT, clean_env, run_cli

from gateway.dev.demo import start_federation
from gateway.sdnotify import notify

pytestmark = pytest.mark.e2e


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


async def _receive(sock: socket.socket) -> tuple[str, int]:
    """One notification and the process id that sent it."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: fut.done() or fut.set_result(None))
    try:
        await asyncio.wait_for(fut, START_TIMEOUT)
    finally:
        loop.remove_reader(sock.fileno())
    data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
    [(level, kind, creds)] = ancdata
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
    pid, _uid, _gid = struct.unpack("3i", creds)
    return data.decode(), pid


async def _listens(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def _serve_and_stop(
    argv: list[str], env: dict[str, str], manager: socket.socket, line_start: str, log: Path,
) -> str:
    """Start ``argv``, expect READY=1 from it once it printed ``line_start``, SIGTERM it, expect STOPPING=1."""
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    try:
        received = asyncio.create_task(_receive(manager))
        exited = asyncio.create_task(proc.wait())
        await asyncio.wait([received, exited], return_when=asyncio.FIRST_COMPLETED)
        assert received.done(), f"exited with {proc.returncode} before READY=1: {log.read_text()[-2000:]}"
        message, sender = received.result()
        assert (message, sender) == ("READY=1", proc.pid)
        line = (await proc.stdout.readline()).decode()
        while not line.startswith(line_start):  # printed before READY=1 was sent
            line = (await proc.stdout.readline()).decode()
            assert line, "exited without its ready line"
        proc.send_signal(signal.SIGTERM)
        assert await _receive(manager) == ("STOPPING=1", proc.pid)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        return line
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("workers", [1, 2])
async def test_security_server_notifies_ready_once_its_ports_listen(
    tmp_path: Path, manager: socket.socket, workers: int,
) -> None:
    fed = await start_federation(tmp_path / "demo", with_adapters=False, adapter_urls={
        "persons": "http://127.0.0.1:9/persons", "companies": "http://127.0.0.1:9/companies"})
    await fed.server("ss2").stop()  # its settings file (ports 0) serves the process below
    try:
        env = clean_env(NOTIFY_SOCKET=manager.getsockname(), GATEWAY_SERVER__WORKERS=str(workers))
        line = await _serve_and_stop([str(GATEWAY), "-c", str(tmp_path / "demo" / "ss2.toml"), "server", "serve"],
                                     env, manager, "security server DEV/GOV/1002/ss2", tmp_path / "ss2.log")
        address = re.search(r"peers (\S+?),? ", line)
        assert address is not None, line
        assert not await _listens(address.group(1))  # stopped now; it listened when READY=1 came (line printed)
        assert (f"workers {workers}" in line) == (workers > 1)
    finally:
        await fed.close()


async def test_central_server_notifies_ready(tmp_path: Path, manager: socket.socket) -> None:
    settings = tmp_path / "central.toml"
    settings.write_text(f'[central]\ninstance = "DEV"\ndatabase_url = "sqlite+aiosqlite:///{tmp_path}/c.db"\n'
                        f'key_dir = "{tmp_path}/keys"\nport = 0\n')
    rc, out, err = await run_cli("-c", str(settings), "central", "init")
    assert rc == 0, out + err
    line = await _serve_and_stop([str(GATEWAY), "-c", str(settings), "central", "serve"],
                                 clean_env(NOTIFY_SOCKET=manager.getsockname()), manager, "central server listening",
                                 tmp_path / "central.log")
    assert line.startswith("central server listening on http://127.0.0.1:")


def test_without_notify_socket_nothing_is_sent(tmp_path: Path) -> None:
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": "relative/path"}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}) is False
