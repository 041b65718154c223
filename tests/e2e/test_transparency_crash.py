"""Crash safety of the transparency index (docs/transparency.md section 3): a usage record's blind-index rows
commit in the record's own transaction, so ``kill -9`` of both security servers (real ``gateway server serve``
processes) the moment an exchange about a subject is acknowledged loses no index row. Then, on SQLite and on
PostgreSQL:

- ``findUsage``, called over the exchange after the restart, finds every acknowledged exchange, on the
  provider's server (its disclosure record) and on the consumer's (its access record);
- in both servers' databases every usage record has one index row per subject, and every index row its record.

The PKI, the central server, the service and the load generator run in the test's event loop; ss1 and ss2 run
as processes of their own on the addresses registered for them (as in test_log_crash.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import sqlalchemy as sa
from conftest import PG_DSN
from process_kit import serve_process
from test_log_crash import Service, _process_settings

from gateway.dev.demo import start_federation
from gateway.messagelog.models import records, usage_index
from gateway.storage.db import make_engine

pytestmark = pytest.mark.e2e

CONSUMER = "DEV/GOV/1001/consumer"  # also the portal's subsystem here: findUsage answers it
REGISTRY = "DEV/GOV/1002/registry"
PERSONS = f"{REGISTRY}/persons"
ORIGINS = {"ss1": "DEV/GOV/1001/ss1", "ss2": "DEV/GOV/1002/ss2"}
SUBJECTS = ("EE38001085718", "EE49002124277", "FI010101A1234", "LV12345678901")
CENTRAL = {"transparency_purposes": ("TAX=Tax assessment",), "transparency_portal": CONSUMER}
TOTAL = 160  # requests in the load: bounded
WORKERS = 8
KILL_AFTER = 40  # acknowledged exchanges; the kill follows the last of them at once
PAGE = 100  # findUsage's largest page ([server] transparency_max_page)


@contextlib.asynccontextmanager
async def databases(kind: str, tmp: Path) -> AsyncIterator[dict[str, str]]:
    """Each server's database URL: SQLite files (the federation's default) or fresh PostgreSQL databases."""
    if kind == "sqlite":
        yield {}
        return
    names = {code: f"gw_test_{uuid.uuid4().hex[:16]}" for code in ORIGINS}
    conn = await asyncpg.connect(PG_DSN)
    try:
        for name in names.values():
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    host = PG_DSN.rpartition("/")[0].split("://", 1)[1]
    try:
        yield {code: f"postgresql+asyncpg://{host}/{name}" for code, name in names.items()}
    finally:
        conn = await asyncpg.connect(PG_DSN)
        try:
            for name in names.values():
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def found_by_find_usage(session: aiohttp.ClientSession, client_url: str, subsystem: str) -> dict[str, str]:
    """``{messageId: role}`` of every item ``findUsage`` of ``subsystem`` answers, over all the subjects."""
    out: dict[str, str] = {}
    for subject in SUBJECTS:
        offset, total = 0, None
        while total is None or offset < total:
            body = {"userCode": subject, "offset": offset, "limit": PAGE}
            async with session.post(f"{client_url}/r1/{subsystem}/findUsage", json=body,
                                    headers={"X-Road-Client": CONSUMER}) as resp:
                text = await resp.text()
                assert resp.status == 200, text
            doc = json.loads(text)
            total = doc["total"]
            assert doc["usages"] or offset >= total, doc
            for item in doc["usages"]:
                out[item["messageId"]] = item["role"]
            offset += len(doc["usages"])
    return out


async def index_invariant(database_url: str, origin: str) -> int:
    """Every usage record of ``origin`` has one index row per subject and every index row its usage record;
    the number of usage records."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            kept = {(int(seq), bytes(data)) for seq, data in await conn.execute(
                sa.select(records.c.seq, records.c.record).where(records.c.origin == origin,
                                                                 records.c.kind == "usage"))}
            rows: dict[int, int] = {}
            for (seq,) in await conn.execute(sa.select(usage_index.c.seq).where(usage_index.c.origin == origin)):
                rows[int(seq)] = rows.get(int(seq), 0) + 1
    finally:
        await engine.dispose()
    wanted = {seq: len(json.loads(data)["extensions"]["usage.subjects"]) for seq, data in kept}
    assert rows == wanted, (origin, sorted(set(rows) ^ set(wanted))[:10])
    return len(wanted)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_kill_9_right_after_the_answer_loses_no_index_row(tmp_path: Path, kind: str) -> None:
    service = await Service().start()
    async with databases(kind, tmp_path) as urls:
        fed = await start_federation(
            tmp_path / "fed", database_urls=urls, with_adapters=False, central_overrides=CENTRAL,
            adapter_urls={"persons": service.url, "companies": service.url},
        )
        try:
            servers = {code: fed.server(code) for code in ORIGINS}
            settings: dict[str, Path] = {}
            client_url = servers["ss1"].client_url
            for code, ss in servers.items():  # (1) both servers into processes of their own, same ports and files
                client_port = ss.client_url.rsplit(":", 1)[1]
                server_port = ss.server_address.rsplit(":", 1)[1]
                await ss.stop()
                settings[code] = tmp_path / f"{code}-process.toml"
                settings[code].write_text(_process_settings((fed.workdir / f"{code}.toml").read_text(),
                                                            client_port=client_port, server_port=server_port))
            database_urls = {code: ss.settings.server.database_url for code, ss in servers.items()}
            acked: list[str] = []
            failed = sent = 0
            async with aiohttp.ClientSession() as session:

                async def exchange(n: int) -> str | None:
                    headers = {"X-Road-Client": CONSUMER, "X-Road-Data-Subject": SUBJECTS[n % len(SUBJECTS)],
                               "X-Road-Purpose": "TAX"}
                    try:
                        async with session.get(f"{client_url}/r1/{PERSONS}/?limit=1", headers=headers) as resp:
                            await resp.read()
                            if resp.status == 200 and resp.headers.get("X-Road-Service") == PERSONS:
                                return resp.headers["X-Road-Id"]
                    except aiohttp.ClientError:
                        pass
                    return None

                # (2) Load about the subjects; the moment the KILL_AFTER-th answer is in, SIGKILL of both servers,
                #     in the same step (no await in between): the index rows of the last answers were committed
                #     right before, or the answers would not have left.
                async with (
                    serve_process(settings["ss2"], tmp_path / "ss2.stderr") as (ss2, _),
                    serve_process(settings["ss1"], tmp_path / "ss1.stderr") as (ss1, _),
                ):
                    procs = (ss1, ss2)

                    async def worker() -> None:
                        nonlocal sent, failed
                        while sent < TOTAL:
                            sent += 1
                            message_id = await exchange(sent)
                            if message_id is None:
                                failed += 1
                                continue
                            acked.append(message_id)
                            if len(acked) == KILL_AFTER:
                                for proc in procs:
                                    proc.kill()

                    await asyncio.gather(*(worker() for _ in range(WORKERS)))
                    for proc in procs:
                        assert await proc.wait() == -signal.SIGKILL
                assert len(acked) >= KILL_AFTER and failed > 0, (len(acked), failed)  # the kill hit mid-load
                # (3) Restart; a few more exchanges; then findUsage over the exchange, as the portal calls it.
                async with (
                    serve_process(settings["ss2"], tmp_path / "ss2.stderr"),
                    serve_process(settings["ss1"], tmp_path / "ss1.stderr"),
                ):
                    after = [m for m in [await exchange(n) for n in range(8)] if m is not None]
                    assert len(after) >= 4, after
                    acked.extend(after)
                    disclosed = await found_by_find_usage(session, client_url, REGISTRY)
                    accessed = await found_by_find_usage(session, client_url, CONSUMER)
            # (4) Every acknowledged exchange is found on both sides.
            lost = [m for m in acked if disclosed.get(m) != "disclosure"]
            assert not lost, f"{len(lost)} acknowledged exchanges lack a disclosure findUsage finds: {lost[:5]}"
            lost = [m for m in acked if accessed.get(m) != "access"]
            assert not lost, f"{len(lost)} acknowledged exchanges lack an access record findUsage finds: {lost[:5]}"
            # (5) Records and rows, one to one (none without the other), in both databases.
            for code, origin in ORIGINS.items():
                assert await index_invariant(database_urls[code], origin) >= len(acked)
        finally:
            await fed.close()
            await service.close()
