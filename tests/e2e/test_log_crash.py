"""Crash safety of the message log, and its invariant (docs/messagelog.md section 11): ``kill -9`` of both
security servers at once (real ``gateway server serve`` processes) in the middle of a bounded load, then:

- every response the load generator received has both of its records (request and response) in the
  consumer's log: an answer never leaves before that side's records are durable;
- every request the service received has its request record in the provider's log: a request never reaches
  the service before the provider's record of it is durable;
- after the restart both servers serve again, and the trees, the checkpoints and their timestamps all verify.

The PKI, the central server, the service (a recording one, standing in for the persons adapter) and the
load generator run in the test's event loop; the consumer's server ss1 and the provider's ss2 each run as a
process of their own on the addresses registered for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from process_kit import run_cli, serve_process

from gateway.dev.demo import start_federation
from gateway.messagelog.checkpointer import Checkpointer, HttpTimestampFetcher
from gateway.messagelog.store import SqlMessageLogStore
from gateway.protocol.signatures import KeySigner
from gateway.server.keyfiles import KeyFiles
from gateway.storage.db import make_engine
from gateway.trust import keys

pytestmark = pytest.mark.e2e

PERSONS = "DEV/GOV/1002/registry/persons"
CONSUMER = "DEV/GOV/1001/consumer"
ORIGINS = {"ss1": "DEV/GOV/1001/ss1", "ss2": "DEV/GOV/1002/ss2"}
SIDES = {"ss1": "client", "ss2": "server"}
TOTAL = 160  # requests in the load: bounded
WORKERS = 8
KILL_AFTER = 40  # acknowledged exchanges before the kill
WARM_UP = 3  # exchanges acknowledged, and checkpointed by both servers, before the load
CHECKPOINT_TIMEOUT = 60  # seconds for a server's first checkpoint (its interval here is 0.2 s)


class Service:
    """The service behind the provider: answers a small JSON document and notes each request's
    ``X-Road-Request-Id`` (which the provider passes on) as it arrives."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(request.headers["X-Road-Request-Id"])
        return web.json_response({"items": [{"id": 1}]})

    async def start(self) -> Service:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def both_servers(settings: dict[str, Path], tmp: Path) -> AsyncIterator[dict[str, asyncio.subprocess.Process]]:
    async with (
        serve_process(settings["ss2"], tmp / "ss2.stderr") as (ss2, _),
        serve_process(settings["ss1"], tmp / "ss1.stderr") as (ss1, _),
    ):
        yield {"ss1": ss1, "ss2": ss2}


async def wait_for_checkpoint(database_url: str, origin: str) -> None:
    """Return once a server's process has stored a checkpoint of ``origin`` (read from its database)."""
    engine = make_engine(database_url)
    store = SqlMessageLogStore(engine)
    try:
        async with asyncio.timeout(CHECKPOINT_TIMEOUT):
            while not await store.checkpoints(origin):
                await asyncio.sleep(0.05)  # polling another process's database: there is nothing to await
    finally:
        await store.close()
        await engine.dispose()


def _process_settings(text: str, *, client_port: str, server_port: str) -> str:
    text = re.sub(r"(?m)^client_port = .*$", f"client_port = {client_port}", text)
    text = re.sub(r"(?m)^server_port = .*$", f"server_port = {server_port}", text)
    # no ops port: a port picked at random by one process could be the other's fixed port, freed a moment ago
    text = re.sub(r"(?m)^ops_port = .*$", "ops_port = -1", text)
    return re.sub(r"(?m)^client_https_port = .*$", "client_https_port = -1", text)


async def test_kill_9_of_both_servers_loses_no_acknowledged_record(tmp_path: Path) -> None:
    service = await Service().start()
    fed = await start_federation(
        tmp_path / "fed", server_overrides={"checkpoint_interval_seconds": 0.2}, with_adapters=False,
        adapter_urls={"persons": service.url, "companies": service.url},
    )
    try:
        servers = {code: fed.server(code) for code in ("ss1", "ss2")}
        conf = servers["ss1"].globalconf  # its last configuration, for the checkpointer of step (5)
        # (1) Both servers move into processes of their own, on the addresses registered for them (same ports,
        #     same files).
        settings: dict[str, Path] = {}
        client_url = servers["ss1"].client_url
        for code, ss in servers.items():
            client_port = ss.client_url.rsplit(":", 1)[1]
            server_port = ss.server_address.rsplit(":", 1)[1]
            await ss.stop()
            settings[code] = tmp_path / f"{code}-process.toml"
            settings[code].write_text(_process_settings((fed.workdir / f"{code}.toml").read_text(),
                                                        client_port=client_port, server_port=server_port))
        databases = {code: ss.settings.server.database_url for code, ss in servers.items()}
        acked: list[str] = []
        failed = 0
        enough = asyncio.Event()
        async with aiohttp.ClientSession() as session:

            async def exchange() -> str | None:
                try:
                    async with session.get(f"{client_url}/r1/{PERSONS}/?limit=1",
                                           headers={"X-Road-Client": CONSUMER}) as resp:
                        await resp.read()
                        if resp.status == 200 and resp.headers.get("X-Road-Service") == PERSONS:
                            return resp.headers["X-Road-Request-Id"]
                except aiohttp.ClientError:
                    pass
                return None

            # (2) Load, and kill -9 of both once KILL_AFTER exchanges have been acknowledged. First a few
            #     exchanges and each server's first checkpoint of them, so that the crash always falls after a
            #     checkpoint (step 5 checks that the trees go on from it), however slowly the processes start.
            async with both_servers(settings, tmp_path) as procs:
                for _ in range(WARM_UP):
                    request_id = await exchange()
                    assert request_id is not None
                    acked.append(request_id)
                for code, url in databases.items():
                    await wait_for_checkpoint(url, ORIGINS[code])
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
                    for proc in procs.values():  # SIGKILL, both at once: no shutdown, no flush
                        proc.kill()

                kill_task = asyncio.create_task(killer())
                await asyncio.gather(*(worker() for _ in range(WORKERS)))
                await kill_task
                for proc in procs.values():
                    assert await proc.wait() == -signal.SIGKILL
            assert len(acked) >= KILL_AFTER and failed > 0, (len(acked), failed)  # the kill hit mid-load
            served = list(service.received)  # what reached the service
            assert len(served) >= len(acked)
            # (3) Restart: both answer again (the load generator's and the consumer's pools reconnect).
            async with both_servers(settings, tmp_path):
                after = [rid for rid in [await exchange() for _ in range(10)] if rid is not None]
                assert len(after) >= 5, after
                acked.extend(after)
        # (4) The invariant, on the logs that survived the kill.
        stores = {code: SqlMessageLogStore(make_engine(url)) for code, url in databases.items()}
        try:
            logged: dict[str, dict[str, list[str]]] = {}
            for code, store in stores.items():
                size = await store.size(ORIGINS[code])
                logged[code] = {}
                for start in range(0, size, 1000):
                    for stored in await store.read(ORIGINS[code], start=start, limit=1000):
                        r = stored.decode()
                        assert r.side == SIDES[code]
                        logged[code].setdefault(r.request_id, []).append(r.kind)
            # Every response the load generator received: both of its records in the consumer's log (and,
            # since the provider answered only once its own were durable, in the provider's).
            for code in ("ss1", "ss2"):
                missing = [rid for rid in acked if sorted(logged[code].get(rid, [])) != ["request", "response"]]
                assert not missing, f"{code}: {len(missing)} acknowledged exchanges lack records: {missing[:5]}"
            # Every request the service received: its request record in the provider's log.
            unlogged = [rid for rid in served if "request" not in logged["ss2"].get(rid, [])]
            assert not unlogged, f"{len(unlogged)} requests reached the service unlogged: {unlogged[:5]}"
            # (5) The restored trees go on consistently: a checkpoint of everything, signed and timestamped.
            async with aiohttp.ClientSession() as http:
                for code, store in stores.items():
                    files = KeyFiles(dir=Path(servers[code].settings.server.state_dir))
                    signer = KeySigner(key=keys.read_private_key(files.sign_key),
                                       cert=keys.read_certificate(files.sign_cert))
                    cp = Checkpointer(store=store, origin=ORIGINS[code], signer=signer, conf=lambda: conf.current,
                                      fetch=HttpTimestampFetcher(http))
                    await cp.start(servers["ss1"].clock())
                    result = await cp.run_once(servers["ss1"].clock(), force=True)
                    assert result.stamp_error is None
                    assert cp.tree.size == await store.size(ORIGINS[code])
                    assert len(await store.checkpoints(ORIGINS[code])) >= 2  # made before the crash, and now
        finally:
            for store in stores.values():
                await store.close()
                await store.engine.dispose()
        # (6) The whole online logs verify: records against leaf hashes, roots, signatures, tokens, consistency.
        for path in settings.values():
            code, out, err = await run_cli("-c", str(path), "log", "checkpoints", "--verify")
            assert code == 0, err
            doc = json.loads(out)
            assert doc["verified"] is True and doc["checkpoints"], doc
    finally:
        await fed.close()
        await service.close()
