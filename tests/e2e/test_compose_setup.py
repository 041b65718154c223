"""The compose federation without Docker: ``deploy/compose/config/setup.sh`` and the settings files beside it, run
on this machine as the containers would run them, on PostgreSQL. Only what Docker provides is replaced: host
names and fixed ports become 127.0.0.1 and free ports, ``/var/lib/gateway`` a temporary directory (the same
rewrite of the same files). Then every part starts as its compose command does, and Agency A's consumer gets an
answer from Agency B's registry through both security servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from conftest import PG_DSN
from process_kit import GATEWAY, START_TIMEOUT, clean_env, exchange

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "config"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@contextlib.asynccontextmanager
async def _databases(*names: str) -> AsyncIterator[dict[str, str]]:
    base = PG_DSN.rpartition("/")[0].split("://", 1)[1]
    made = {n: f"gw_compose_{n}_{uuid.uuid4().hex[:12]}" for n in names}
    conn = await asyncpg.connect(PG_DSN)
    try:
        for db in made.values():
            await conn.execute(f'CREATE DATABASE "{db}"')
    finally:
        await conn.close()
    try:
        yield {n: f"postgresql+asyncpg://{base}/{db}" for n, db in made.items()}
    finally:
        conn = await asyncpg.connect(PG_DSN)
        try:
            for db in made.values():
                await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        finally:
            await conn.close()


def _rewrite(text: str, state: Path, ports: dict[str, int]) -> str:
    """What Docker gives the containers, given here: the state directory, 127.0.0.1 and free ports."""
    text = text.replace("/var/lib/gateway", str(state)).replace('"0.0.0.0"', '"127.0.0.1"')
    text = text.replace("http://central:4100", f"http://127.0.0.1:{ports['central']}")
    for key, value in (("port", "central"), ("client_port", "client"), ("server_port", "server")):
        text = re.sub(rf"(?m)^{key} = \d+", f"{key} = {ports[value]}", text)
    text = re.sub(r'(?m)^address = "ss\d:5500"', f'address = "127.0.0.1:{ports["server"]}"', text)
    text = re.sub(r"(?m)^(client_https_port|admin_port) = \d+", r"\1 = -1", text)
    return re.sub(r"(?m)^ops_port = \d+", "ops_port = 0", text)  # a free port: ss1 and ss2 share one host here


@contextlib.asynccontextmanager
async def _part(argv: list[str], env: dict[str, str], log: Path, ready: str) -> AsyncIterator[None]:
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while line := (await proc.stdout.readline()).decode():
                if line.startswith(ready):
                    break
            else:
                raise AssertionError(f"{argv[1:]} exited before it listened: {log.read_text()[-2000:]}")
        drain = asyncio.create_task(proc.stdout.read())
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
    await drain


async def test_setup_script_and_settings_make_a_working_federation(tmp_path: Path) -> None:
    state, conf = tmp_path / "state", tmp_path / "etc"
    conf.mkdir()
    ocsp, tsa, adapters, central = _free_ports(4)
    ss = {n: dict(zip(("client", "server"), _free_ports(2), strict=True)) for n in (1, 2)}
    (conf / "setup.sh").write_text((CONFIG / "setup.sh").read_text())
    (conf / "central.toml").write_text(_rewrite((CONFIG / "central.toml").read_text(), state,
                                                {"central": central, "client": 0, "server": 0}))
    for n in (1, 2):
        (conf / f"ss{n}.toml").write_text(_rewrite((CONFIG / f"ss{n}.toml").read_text(), state,
                                                   {"central": central, **ss[n]}))
    async with _databases("central", "ss1", "ss2") as dbs:
        env = clean_env(
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", STATE=str(state), CONF=str(conf),
            OCSP_URL=f"http://127.0.0.1:{ocsp}", TSA_URL=f"http://127.0.0.1:{tsa}",
            ADAPTERS_URL=f"http://127.0.0.1:{adapters}", SS1_ADDRESS=f"127.0.0.1:{ss[1]['server']}",
            SS2_ADDRESS=f"127.0.0.1:{ss[2]['server']}", GATEWAY_CENTRAL__DATABASE_URL=dbs["central"],
            SS1_DATABASE_URL=dbs["ss1"], SS2_DATABASE_URL=dbs["ss2"],
        )
        # (1) the set-up, as the compose service runs it; a second run does nothing
        proc = await asyncio.create_subprocess_exec("sh", str(conf / "setup.sh"), env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 300)
        assert proc.returncode == 0, (out + err).decode()[-4000:]
        assert out.decode().rstrip().endswith("the federation is set up")
        proc = await asyncio.create_subprocess_exec("sh", str(conf / "setup.sh"), env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        again, _ = await proc.communicate()
        assert proc.returncode == 0 and b"set up already" in again
        # (2) every part as its compose command starts it
        gw = str(GATEWAY)
        async with contextlib.AsyncExitStack() as parts:
            await parts.enter_async_context(_part(
                [gw, "pki", "serve", "--dir", str(state / "pki"), "--host", "127.0.0.1", "--ocsp-port", str(ocsp),
                 "--tsa-port", str(tsa)], env, tmp_path / "pki.log", "TSA: "))
            await parts.enter_async_context(_part(
                [gw, "-c", str(conf / "central.toml"), "central", "serve"], env, tmp_path / "central.log",
                "central server listening on "))
            await parts.enter_async_context(_part(
                [gw, "adapter", "serve", "--config", str(state / "registries" / "adapters.toml"), "--host",
                 "127.0.0.1", "--port", str(adapters)], env, tmp_path / "adapters.log", "adapters listening on "))
            for n in (1, 2):
                await parts.enter_async_context(_part(
                    [gw, "-c", str(conf / f"ss{n}.toml"), "server", "serve"],
                    {**env, "GATEWAY_SERVER__DATABASE_URL": dbs[f"ss{n}"]}, tmp_path / f"ss{n}.log",
                    f"security server DEV/GOV/100{n}/ss{n}"))
            # (3) Agency A's consumer reads Agency B's registry through both servers
            async with aiohttp.ClientSession() as http:
                rid = await exchange(http, f"http://127.0.0.1:{ss[1]['client']}")
                assert rid is not None, (tmp_path / "ss1.log").read_text()[-3000:]
