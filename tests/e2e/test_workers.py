"""``[server] workers = 2``: a real ``gateway server serve`` supervising two worker processes on one SQLite
database, sharing the server port with SO_REUSEPORT.

Each worker logs under its own origin (``DEV/GOV/1002/ss2`` and ``DEV/GOV/1002/ss2/1``); ``kill -9`` of
worker 1 under load: the supervisor starts it again, it continues its own log, nothing acknowledged is missing,
both logs verify and are exported, verified and matched by the auditors' commands; SIGTERM stops them all.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
from pathlib import Path

import aiohttp
import pytest
from ops_kit import samples, total
from process_kit import (
    alive,
    checkpointed,
    exchange,
    logged,
    run_cli,
    serve_process,
    wait_until,
    worker_pids,
)

from gateway.dev.demo import start_federation
from gateway.storage.db import make_engine

pytestmark = pytest.mark.e2e

W0, W1 = "DEV/GOV/1002/ss2", "DEV/GOV/1002/ss2/1"
CONCURRENCY = 12  # exchanges in flight: the consumer's pool opens as many connections, spread over the workers
TIMEOUT = 60  # seconds for anything another process must do


async def test_two_workers_share_the_port_and_survive_a_kill(tmp_path: Path) -> None:
    fed = await start_federation(tmp_path / "fed", server_overrides={"checkpoint_interval_seconds": 0.2})
    try:
        ss1, ss2 = fed.server("ss1"), fed.server("ss2")
        database_url = ss2.settings.server.database_url
        # (1) ss2 moves into a supervised pair of worker processes on its registered port
        port = ss2.server_address.rsplit(":", 1)[1]
        await ss2.stop()
        text = (fed.workdir / "ss2.toml").read_text()
        text = re.sub(r"(?m)^server_port = .*$", f"server_port = {port}", text)
        text = re.sub(r"(?m)^client_https_port = .*$", "client_https_port = -1", text)
        text = re.sub(r"(?m)^workers = .*$", "workers = 2", text)
        ops_port = _free_port()
        text = re.sub(r"(?m)^ops_port = .*$", f"ops_port = {ops_port}", text)
        settings = tmp_path / "ss2-workers.toml"
        settings.write_text(text)
        log = tmp_path / "ss2.stderr"
        acked: list[str] = []
        async with serve_process(settings, log) as (proc, line), aiohttp.ClientSession() as session:
            assert line.endswith("workers 2") and f"peers 127.0.0.1:{port}" in line and ", admin http" in line
            pids = worker_pids(proc.pid)
            assert sorted(pids) == [0, 1], pids

            progress = asyncio.Condition()

            async def one() -> None:
                request_id = await exchange(session, ss1.client_url)
                if request_id is not None:
                    async with progress:
                        acked.append(request_id)
                        progress.notify_all()

            async def load(rounds: int = 1) -> None:
                for _ in range(rounds):
                    await asyncio.gather(*(one() for _ in range(CONCURRENCY)))

            async def both_log(min_sizes: dict[str, int]) -> bool:
                # new connections each round: the kernel spreads new connections over the listeners, and the
                # consumer's pool would otherwise keep those it has (all to worker 0 while worker 1 was down)
                assert ss1.context is not None
                await ss1.context.peers.close()
                await load()
                recs = await logged(database_url, [W0, W1])
                return all(len(recs[o]) > n for o, n in min_sizes.items())

            # (2) both workers serve: connections are spread over the two listeners of the port
            await wait_until(lambda: both_log({W0: 0, W1: 0}), timeout=TIMEOUT, what="both workers log exchanges")
            # ... and the scrape of the shared ops port adds up both workers' exchanges (multiprocess mode)
            recs = await logged(database_url, [W0, W1])
            metrics_dir = Path(ss2.settings.server.state_dir) / "metrics"
            assert (metrics_dir.stat().st_mode & 0o777) == 0o700
            async with session.get(f"http://127.0.0.1:{ops_port}/metrics") as resp:
                assert resp.status == 200
                scraped = samples(await resp.text())
            served = total(scraped, "gateway_exchanges_total", side="server", outcome="ok")
            assert served == len(recs[W0]) + len(recs[W1]), (served, len(recs[W0]), len(recs[W1]))
            # (3) kill -9 of worker 1 under load; the supervisor starts it again with the same index
            before = {o: len(r) for o, r in (await logged(database_url, [W0, W1])).items()}
            killed = pids[1]
            load_task = asyncio.create_task(load(4))
            async with progress:  # the kill falls while the load runs: after its first acknowledged exchanges
                target = len(acked) + CONCURRENCY // 2
                await asyncio.wait_for(progress.wait_for(lambda: len(acked) >= target), TIMEOUT)
            os.kill(killed, signal.SIGKILL)
            await load_task
            await wait_until(lambda: worker_pids(proc.pid).get(1, killed) != killed, timeout=TIMEOUT,
                             what="the supervisor starts worker 1 again")
            assert not alive(killed) and worker_pids(proc.pid)[0] == pids[0]  # worker 0 was never touched
            # (4) the new worker 1 continues its own log (its origin, sequence numbers on from the old ones)
            await wait_until(lambda: both_log({W1: before[W1]}), timeout=TIMEOUT,
                             what="the restarted worker 1 logs under its origin again")
            await wait_until(lambda: checkpointed(database_url, [W0, W1]), timeout=TIMEOUT,
                             what="both origins checkpointed and timestamped up to their size")
            # (5) SIGTERM to the supervisor stops every worker
            workers = worker_pids(proc.pid)
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
            assert not any(alive(p) for p in workers.values())
        # (6) every acknowledged exchange is in the provider's logs (one origin or the other) and the consumer's
        recs = await logged(database_url, [W0, W1])
        provider = {rid: kinds for origin in (W0, W1) for rid, kinds in recs[origin].items()}
        missing = [rid for rid in acked if sorted(provider.get(rid, [])) != ["request", "response"]]
        assert not missing, f"{len(missing)} acknowledged exchanges lack provider records: {missing[:5]}"
        assert not set(recs[W0]) & set(recs[W1])  # no exchange logged by both workers
        # (7) the auditors' commands: list, verify online, export every origin, verify offline, match
        rc, out, err = await run_cli("-c", str(settings), "log", "origins")
        assert rc == 0, err
        listed = json.loads(out)["origins"]
        assert [(o["origin"], o["worker"]) for o in listed] == [(W0, 0), (W1, 1)]
        for origin in (W0, W1):
            rc, out, err = await run_cli("-c", str(settings), "log", "checkpoints", "--verify", "--origin", origin)
            assert rc == 0 and json.loads(out)["verified"] is True, err
        provider_dir, consumer_dir = tmp_path / "ss2-archives", tmp_path / "ss1-archives"
        rc, out, err = await run_cli("-c", str(settings), "log", "export", "--all-origins", "--out", str(provider_dir))
        assert rc == 0, err
        assert sorted(p.name for p in provider_dir.iterdir()) == ["DEV_GOV_1002_ss2.zip", "DEV_GOV_1002_ss2_1.zip"]
        assert ss1.checkpointer is not None
        await ss1.checkpointer.run_once(ss1.clock(), force=True)  # the consumer's records, all covered
        rc, out, err = await run_cli("-c", str(fed.workdir / "ss1.toml"), "log", "export", "--all-origins",
                                     "--out", str(consumer_dir))
        assert rc == 0, err
        for archive in sorted(provider_dir.iterdir()):
            rc, out, err = await run_cli("log", "verify", str(archive), "--anchor", str(fed.anchor_path))
            assert rc == 0, out + err
        rc, out, err = await run_cli("log", "match", str(consumer_dir), str(provider_dir))
        assert f"provider log {W0}, {W1}:" in out, out + err
        # Exchanges cut by the kill may be logged in part; every acknowledged one pairs, and none is a duplicate.
        failures = [line for line in out.splitlines() if line.startswith("FAIL")]
        assert not [f for f in failures if any(rid in f for rid in acked) or "duplicate" in f], out
        paired = re.search(r"paired and identical: (\d+)", out)
        assert paired is not None and int(paired.group(1)) >= len(set(acked)), out
    finally:
        await fed.close()


async def test_a_worker_that_cannot_claim_its_origin_stops_the_start(tmp_path: Path) -> None:
    """Two processes that would write one origin fail loudly: with ``DEV/GOV/1002/ss2/1`` held by another process,
    worker 1 refuses to start (exit 2, the origin and its holder named), and the supervisor stops worker 0 and
    exits 2 rather than run without it."""
    from gateway.server.lease import OriginLease

    fed = await start_federation(tmp_path / "fed")
    try:
        ss2 = fed.server("ss2")
        await ss2.stop()
        text = (fed.workdir / "ss2.toml").read_text()
        text = re.sub(r"(?m)^client_https_port = .*$", "client_https_port = -1", text)
        text = re.sub(r"(?m)^workers = .*$", "workers = 2", text)
        settings = tmp_path / "ss2-workers.toml"
        settings.write_text(text)
        engine = make_engine(ss2.settings.server.database_url)
        held = await OriginLease.acquire(engine, W1)
        try:
            rc, out, err = await run_cli("-c", str(settings), "server", "serve")
        finally:
            await held.release()
        assert rc == 2, err
        assert f"log origin {W1} is already written by another process ({held.holder}" in err
        assert "security server" not in out  # never announced as listening
        # worker 0 was stopped: its origin is free again
        again = await OriginLease.acquire(engine, W0)
        await again.release()
        await engine.dispose()
    finally:
        await fed.close()


async def test_workers_stop_when_their_supervisor_dies(tmp_path: Path) -> None:
    """``kill -9`` of the supervisor: each worker sees its end of the channel close and stops by itself, giving
    up its origin (nothing is left running that no supervisor restarts or stops)."""
    from gateway.server.lease import OriginLease

    fed = await start_federation(tmp_path / "fed")
    try:
        ss2 = fed.server("ss2")
        await ss2.stop()
        text = (fed.workdir / "ss2.toml").read_text()
        text = re.sub(r"(?m)^client_https_port = .*$", "client_https_port = -1", text)
        text = re.sub(r"(?m)^workers = .*$", "workers = 2", text)
        settings = tmp_path / "ss2-workers.toml"
        settings.write_text(text)
        async with serve_process(settings, tmp_path / "ss2.stderr") as (proc, line):
            assert line.endswith("workers 2")
            workers = worker_pids(proc.pid)
            assert sorted(workers) == [0, 1]
            proc.kill()
            assert await proc.wait() == -signal.SIGKILL
            await wait_until(lambda: not any(alive(p) for p in workers.values()), timeout=TIMEOUT,
                             what="both workers stop after their supervisor died")
        engine = make_engine(ss2.settings.server.database_url)
        try:
            for origin in (W0, W1):
                lease = await OriginLease.acquire(engine, origin)
                lease.check()
                await lease.release()
        finally:
            await engine.dispose()
    finally:
        await fed.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
