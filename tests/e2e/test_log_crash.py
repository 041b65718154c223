"""Crash safety of the message log: ``kill -9`` of the provider's security server (a real
``gateway server serve`` process) in the middle of a bounded load loses no record that was acknowledged to a
client, and after the restart the tree, the checkpoints and their timestamps all verify.

The federation (PKI, central server, consumer's server ss1, adapters) runs in the test's event loop; the
provider's server ss2 runs as a separate process on the address registered for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.dev.demo import start_federation
from gateway.messagelog.checkpointer import Checkpointer, HttpTimestampFetcher
from gateway.messagelog.store import SqlMessageLogStore
from gateway.protocol.signatures import KeySigner
from gateway.server.keyfiles import KeyFiles
from gateway.storage.db import make_engine
from gateway.trust import keys

pytestmark = pytest.mark.e2e

GATEWAY = Path(sys.executable).parent / "gateway"
PERSONS = "DEV/GOV/1002/registry/persons"
CONSUMER = "DEV/GOV/1001/consumer"
TOTAL = 160  # requests in the load: bounded
WORKERS = 8
KILL_AFTER = 40  # acknowledged exchanges before the kill
START_TIMEOUT = 60  # seconds for the provider process to come up
WARM_UP = 3  # exchanges acknowledged, and checkpointed by the provider, before the load
CHECKPOINT_TIMEOUT = 60  # seconds for the provider's first checkpoint (its interval here is 0.2 s)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


@contextlib.asynccontextmanager
async def provider_process(settings: Path, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``gateway server serve`` for ss2, yielded once it prints that it listens; stopped (if alive) after."""
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            str(GATEWAY), "-c", str(settings), "server", "serve", stdout=asyncio.subprocess.PIPE, stderr=err,
            env=_env(),
        )
    assert proc.stdout is not None
    drain: asyncio.Task[bytes] | None = None
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while line := (await proc.stdout.readline()).decode():
                if line.startswith("security server "):
                    break
            else:
                raise AssertionError(f"ss2 exited before listening; see {log}: {log.read_text()[-2000:]}")
        drain = asyncio.create_task(proc.stdout.read())  # keep the pipe from filling up
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
        if drain is not None:
            await drain


async def wait_for_checkpoint(database_url: str, origin: str) -> None:
    """Return once the provider's process has stored a checkpoint of ``origin`` (read from its database)."""
    engine = make_engine(database_url)
    store = SqlMessageLogStore(engine)
    try:
        async with asyncio.timeout(CHECKPOINT_TIMEOUT):
            while not await store.checkpoints(origin):
                await asyncio.sleep(0.05)  # polling another process's database: there is nothing to await
    finally:
        await store.close()
        await engine.dispose()


async def test_kill_9_of_the_provider_loses_no_acknowledged_record(tmp_path: Path) -> None:
    fed = await start_federation(tmp_path / "fed", server_overrides={"checkpoint_interval_seconds": 0.2})
    try:
        ss1, ss2 = fed.server("ss1"), fed.server("ss2")
        # (1) ss2 moves into its own process, on the address registered for it (same port, same files).
        port = ss2.server_address.rsplit(":", 1)[1]
        await ss2.stop()
        text = (fed.workdir / "ss2.toml").read_text()
        text = re.sub(r"(?m)^server_port = .*$", f"server_port = {port}", text)
        text = re.sub(r"(?m)^client_https_port = .*$", "client_https_port = -1", text)
        settings = tmp_path / "ss2-process.toml"
        settings.write_text(text)
        log = tmp_path / "ss2.stderr"
        acked: list[str] = []
        failed = 0
        enough = asyncio.Event()
        async with aiohttp.ClientSession() as session:

            async def exchange() -> str | None:
                try:
                    async with session.get(f"{ss1.client_url}/r1/{PERSONS}/?limit=1",
                                           headers={"X-Road-Client": CONSUMER}) as resp:
                        await resp.read()
                        if resp.status == 200 and resp.headers.get("X-Road-Service") == PERSONS:
                            return resp.headers["X-Road-Request-Id"]
                except aiohttp.ClientError:
                    pass
                return None

            # (2) Load, and kill -9 once KILL_AFTER exchanges have been acknowledged. First a few exchanges and
            # the provider's first checkpoint of them, so that the crash always falls after a checkpoint
            # (step 5 checks that the tree goes on from it), however slowly the process gets going.
            async with provider_process(settings, log) as proc:
                for _ in range(WARM_UP):
                    request_id = await exchange()
                    assert request_id is not None
                    acked.append(request_id)
                await wait_for_checkpoint(ss2.settings.server.database_url, "DEV/GOV/1002/ss2")
                sent = len(acked)

                async def worker() -> None:
                    nonlocal sent, failed
                    while sent < TOTAL:
                        sent += 1
                        request_id = await exchange()
                        if request_id is None:
                            failed += 1
                        else:
                            acked.append(request_id)
                            if len(acked) >= KILL_AFTER:
                                enough.set()

                async def killer() -> None:
                    await enough.wait()
                    proc.kill()  # SIGKILL: no shutdown, no flush

                kill_task = asyncio.create_task(killer())
                await asyncio.gather(*(worker() for _ in range(WORKERS)))
                await kill_task
                assert await proc.wait() == -signal.SIGKILL
            assert len(acked) >= KILL_AFTER and failed > 0, (len(acked), failed)  # the kill hit mid-load
            # (3) Restart: the provider answers again (the consumer's pool reconnects).
            async with provider_process(settings, log):
                after = [rid for rid in [await exchange() for _ in range(10)] if rid is not None]
                assert len(after) >= 5, after
                acked.extend(after)
        # (4) Every acknowledged exchange has its request and response records in BOTH logs.
        engine = make_engine(ss2.settings.server.database_url)
        store2 = SqlMessageLogStore(engine)
        try:
            for store, origin, side in ((ss1.messagelog, "DEV/GOV/1001/ss1", "client"),
                                        (store2, "DEV/GOV/1002/ss2", "server")):
                size = await store.size(origin)
                logged: dict[str, list[str]] = {}
                for start in range(0, size, 1000):
                    for stored in await store.read(origin, start=start, limit=1000):
                        r = stored.decode()
                        assert r.side == side
                        logged.setdefault(r.request_id, []).append(r.kind)
                missing = [rid for rid in acked if sorted(logged.get(rid, [])) != ["request", "response"]]
                assert not missing, f"{origin}: {len(missing)} acknowledged exchanges lack records: {missing[:5]}"
            # (5) The restored tree goes on consistently: a checkpoint of everything, signed and timestamped.
            files = KeyFiles(dir=Path(ss2.settings.server.state_dir))
            signer = KeySigner(key=keys.read_private_key(files.sign_key), cert=keys.read_certificate(files.sign_cert))
            async with aiohttp.ClientSession() as http:
                cp = Checkpointer(store=store2, origin="DEV/GOV/1002/ss2", signer=signer,
                                  conf=lambda: ss1.globalconf.current, fetch=HttpTimestampFetcher(http))
                await cp.start(ss1.clock())
                result = await cp.run_once(ss1.clock(), force=True)
            assert result.stamp_error is None
            assert cp.tree.size == await store2.size("DEV/GOV/1002/ss2")
            assert len(await store2.checkpoints("DEV/GOV/1002/ss2")) >= 2  # made before the crash, and now
        finally:
            await store2.close()
            await engine.dispose()
        # (6) The whole online log verifies: records against leaf hashes, roots, signatures, tokens, consistency.
        for conf in (settings, fed.workdir / "ss1.toml"):
            proc = await asyncio.create_subprocess_exec(
                str(GATEWAY), "-c", str(conf), "log", "checkpoints", "--verify", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=_env(),
            )
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            doc = json.loads(out)
            assert doc["verified"] is True and doc["checkpoints"], doc
    finally:
        await fed.close()
