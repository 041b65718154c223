"""Two nodes of one security server on one PostgreSQL database behind HAProxy (Debian's ``haproxy``), one of
them killed with ``kill -9`` under load.

The provider's server ss2 runs as two ``gateway server serve`` processes, ``[server] node = "node1"`` and
``"node2"``, each on a port of its own, sharing one PostgreSQL database, keys and settings. HAProxy listens on
the address registered for ss2 and passes TCP through to both (TLS is end to end: the consumer's server checks
the registered authentication certificate of whichever node answers). The consumer's server ss1 (in this
test's event loop) sends a bounded load; node1 is killed mid-way. Then:

- every exchange acknowledged to a client has both its records in ss1's log and in one node's log (node1's
  origin ``DEV/GOV/1002/ss2/node1`` or node2's), none in both;
- the survivor carries the load: exchanges go on being acknowledged, all by node2;
- node1, started again, continues its own log; both logs verify online (``log checkpoints --verify``) and
  exported (``log export --all-origins``, ``log verify``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from conftest import PG_DSN
from process_kit import alive, checkpointed, exchange, logged, run_cli, serve_process, wait_until

from gateway.dev.demo import start_federation

pytestmark = pytest.mark.e2e

N1, N2 = "DEV/GOV/1002/ss2/node1", "DEV/GOV/1002/ss2/node2"
CONCURRENCY = 8
AFTER_KILL = 40  # exchanges the survivor must acknowledge after the kill
TIMEOUT = 90  # seconds for anything another process must do


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    name = f"gw_test_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    host = PG_DSN.rpartition("/")[0].split("://", 1)[1]
    try:
        yield f"postgresql+asyncpg://{host}/{name}"
    finally:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


HAPROXY_CFG = """\
global
    maxconn 2000

defaults
    mode tcp
    timeout connect 2s
    timeout client  60s
    timeout server  60s
    retries 3
    option redispatch

frontend peers_in
    bind 127.0.0.1:{front}
    default_backend ss2_nodes

backend ss2_nodes
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server check inter 200ms fall 1 rise 1
    server node1 127.0.0.1:{node1} check port {ops1}
    server node2 127.0.0.1:{node2} check port {ops2}
"""


@contextlib.asynccontextmanager
async def haproxy(cfg: Path, front: int, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(exe, "-db", "-f", str(cfg), stdout=err, stderr=err)

    async def listening() -> bool:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", front)
        except OSError:
            return False
        w.close()
        return True

    try:
        await wait_until(listening, timeout=TIMEOUT, what="HAProxy listens")
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def test_two_nodes_behind_haproxy_one_killed(tmp_path: Path) -> None:
    async with postgres_database() as database_url:
        fed = await start_federation(tmp_path / "fed", database_urls={"ss2": database_url},
                                     server_overrides={"checkpoint_interval_seconds": 0.2})
        try:
            ss1, ss2 = fed.server("ss1"), fed.server("ss2")
            # (1) ss2 leaves this process; HAProxy takes its registered address, the nodes ports of their own
            front = int(ss2.server_address.rsplit(":", 1)[1])
            await ss2.stop()
            ports = {"node1": free_port(), "node2": free_port()}
            ops = {"node1": free_port(), "node2": free_port()}  # HAProxy checks each node's /readyz there
            cfg = tmp_path / "haproxy.cfg"
            cfg.write_text(HAPROXY_CFG.format(front=front, node1=ports["node1"], node2=ports["node2"],
                                              ops1=ops["node1"], ops2=ops["node2"]))
            base = (fed.workdir / "ss2.toml").read_text()
            base = re.sub(r"(?m)^client_https_port = .*$", "client_https_port = -1", base)
            base = re.sub(r"(?m)^address = .*$", f'address = "127.0.0.1:{front}"', base)
            settings: dict[str, Path] = {}
            for node, port in ports.items():
                text = re.sub(r"(?m)^server_port = .*$", f"server_port = {port}", base)
                text = re.sub(r"(?m)^node = .*$", f'node = "{node}"', text)
                text = re.sub(r"(?m)^ops_port = .*$", f"ops_port = {ops[node]}", text)
                settings[node] = tmp_path / f"ss2-{node}.toml"
                settings[node].write_text(text)
            logs = {node: tmp_path / f"ss2-{node}.stderr" for node in ports}
            acked: list[str] = []
            after_kill: list[str] = []
            # the nodes first, so that HAProxy finds both up and spreads the consumer's first connections
            async with serve_process(settings["node1"], logs["node1"]) as (node1, _), \
                    serve_process(settings["node2"], logs["node2"]) as (node2, _), \
                    haproxy(cfg, front, tmp_path / "haproxy.log"), aiohttp.ClientSession() as session:
                killed = asyncio.Event()
                progress = asyncio.Condition()

                async def worker(stop: asyncio.Event) -> None:
                    while not stop.is_set():
                        rid = await exchange(session, ss1.client_url)
                        if rid is None:
                            continue
                        async with progress:
                            acked.append(rid)
                            if killed.is_set():
                                after_kill.append(rid)
                            progress.notify_all()

                # (2) both nodes carry exchanges (HAProxy spreads the consumer's connections)
                stop = asyncio.Event()
                workers = [asyncio.create_task(worker(stop)) for _ in range(CONCURRENCY)]
                try:
                    async def both_log() -> bool:
                        # a whole exchange each: the response record staples the node's own signing certificate
                        # and its OCSP response, which the exported archive needs to verify its checkpoints
                        recs = await logged(database_url, [N1, N2])
                        return all(any(sorted(k) == ["request", "response"] for k in recs[n].values())
                                   for n in (N1, N2))

                    await wait_until(both_log, timeout=TIMEOUT, what="both nodes log exchanges")
                    # (3) kill -9 of node1 under load; the survivor must go on acknowledging
                    node1.kill()
                    assert await node1.wait() == -signal.SIGKILL
                    killed.set()
                    async with progress:
                        await asyncio.wait_for(progress.wait_for(lambda: len(after_kill) >= AFTER_KILL), TIMEOUT)
                finally:
                    stop.set()
                    await asyncio.gather(*workers)
                assert alive(node2.pid)
                # (4) node1 again: it takes its origin back and continues its own log, checkpointed
                async with serve_process(settings["node1"], logs["node1"]):
                    await wait_until(lambda: checkpointed(database_url, [N1, N2]), timeout=TIMEOUT,
                                     what="both nodes' logs checkpointed and timestamped to their size")
            # (5) nothing acknowledged is missing: both records in one node's log, and in the consumer's
            recs = await logged(database_url, [N1, N2])
            both = set(recs[N1]) & set(recs[N2])
            assert not both, f"exchanges logged by both nodes: {sorted(both)[:5]}"
            provider = {**recs[N1], **recs[N2]}
            missing = [rid for rid in acked if sorted(provider.get(rid, [])) != ["request", "response"]]
            assert not missing, f"{len(missing)} acknowledged exchanges lack provider records: {missing[:5]}"
            consumer: dict[str, list[str]] = {}
            for start in range(0, await ss1.messagelog.size(ss1.origin), 1000):
                for stored in await ss1.messagelog.read(ss1.origin, start=start, limit=1000):
                    r = stored.decode()
                    consumer.setdefault(r.request_id, []).append(r.kind)
            assert not [rid for rid in acked if sorted(consumer.get(rid, [])) != ["request", "response"]]
            # the survivor carried the load after the kill (the requests in flight at the kill aside)
            assert sum(rid in recs[N2] for rid in after_kill) >= len(after_kill) - CONCURRENCY
            # (6) both logs verify, online and as exported archives
            for node, origin in (("node1", N1), ("node2", N2)):
                rc, out, err = await run_cli("-c", str(settings[node]), "log", "checkpoints", "--verify")
                assert rc == 0, err
                doc = json.loads(out)
                assert doc["origin"] == origin and doc["verified"] is True and doc["checkpoints"], doc
            archives = tmp_path / "archives"
            rc, out, err = await run_cli("-c", str(settings["node2"]), "log", "export", "--all-origins",
                                         "--out", str(archives))
            assert rc == 0, err
            assert sorted(p.name for p in archives.iterdir()) == [
                "DEV_GOV_1002_ss2_node1.zip", "DEV_GOV_1002_ss2_node2.zip"]
            for archive in sorted(archives.iterdir()):
                rc, out, err = await run_cli("log", "verify", str(archive), "--anchor", str(fed.anchor_path))
                assert rc == 0, out + err
        finally:
            await fed.close()
