"""``gateway log export`` from a real message-log database (SQLite and PostgreSQL), then offline verification.

The log is filled through :class:`SqlMessageLogStore` with properly signed records and checkpoints
(``tests/archive_kit.py``); the export runs through the CLI entry point, as an operator would run it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from archive_kit import LogWorld, make_log, make_world, signed_checkpoint
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.cli import main
from gateway.messagelog import merkle
from gateway.messagelog.archive import LogArchive
from gateway.messagelog.record import decode
from gateway.messagelog.store import SqlMessageLogStore, StoredCheckpoint, migrate_messagelog
from gateway.messagelog.verify import verify_archive
from gateway.storage.db import make_engine

pytestmark = pytest.mark.integration

ORIGIN = "DEV/GOV/1001/ss1"
EXCHANGES = 20  # 40 records, one exchange per second
CHECKPOINTS = (10, 30, 40)


@dataclass
class Log:
    world: LogWorld
    records: list[bytes]
    settings: Path
    dir: Path
    database_url: str


@pytest_asyncio.fixture
async def log(database_url: str, tmp_path: Path) -> AsyncIterator[Log]:
    world = make_world(tmp_path)
    records = make_log(world, EXCHANGES, per_second=1, start=world.now - timedelta(minutes=5))
    leaves = [merkle.leaf_hash(r) for r in records]
    engine = make_engine(database_url)
    try:
        await migrate_messagelog(engine)
        store = SqlMessageLogStore(engine)
        try:
            for r in records:
                await store.append(decode(r))
            for size in CHECKPOINTS:
                note, token = signed_checkpoint(world, leaves, size)
                tree = merkle.MerkleTree()
                tree.extend(leaves[:size])
                await store.add_checkpoint(StoredCheckpoint(
                    origin=ORIGIN, size=size, root_hash=tree.root(), note=note,
                    signing_cert=world.consumer.cert.public_bytes(Encoding.DER), frontier=tuple(tree.frontier or ()),
                    created=world.now, timestamp_token=token, timestamp_time=world.now, tsa_name="Test TSA",
                    tsa_cert=world.pki.tsa_cert.public_bytes(Encoding.DER),
                ))
        finally:
            await store.close()
    finally:
        await engine.dispose()
    cache = tmp_path / "globalconf"
    cache.mkdir()
    (cache / "globalconf.json").write_bytes(world.envelope)
    settings = tmp_path / "ss1.toml"
    settings.write_text(
        f'[server]\nid = "{ORIGIN}"\ndatabase_url = "{database_url}"\n'
        f'[globalconf]\ncache_dir = "{cache}"\nanchor = "{tmp_path / "anchor.json"}"\n'
    )
    yield Log(world=world, records=records, settings=settings, dir=tmp_path, database_url=database_url)


async def export(log: Log, *args: str) -> tuple[int, Path]:
    out = log.dir / f"export-{hashlib.sha256(repr(args).encode()).hexdigest()[:8]}.zip"
    rc = await asyncio.to_thread(main, ["-c", str(log.settings), "log", "export", "--out", str(out), *args])
    return rc, out


def verify(log: Log, path: Path) -> tuple[int, int, int, bool, str]:
    with LogArchive(path) as a:
        report = verify_archive(a, log.world.anchor)
    return report.start, report.end, report.covered_until, report.ok, report.summary()


async def test_export_everything_and_verify(log: Log) -> None:
    rc, path = await export(log)
    assert rc == 0
    start, end, covered, ok, summary = verify(log, path)
    assert (start, end, covered, ok) == (0, 40, 40, True), summary
    with LogArchive(path) as a:
        # the exact stored bytes, all three checkpoints with tokens, the log's certificate and its OCSP
        assert a.read_chunk(a.manifest.chunks[0]) == b"".join(r + b"\n" for r in log.records)
        assert [c.timestamp is not None for c in a.checkpoints] == [True, True, True]
        assert a.certificates == (log.world.consumer.cert.public_bytes(Encoding.DER),)
        assert a.ocsp_responses == (log.world.consumer_ocsp,)
        assert a.globalconfs == (log.world.envelope,)


async def test_export_a_sequence_range_from_the_middle(log: Log) -> None:
    # records 12..24 asked for: extended to the checkpoint at 30; the prefix covers 0..11
    rc, path = await export(log, "--start", "12", "--end", "25")
    assert rc == 0
    start, end, covered, ok, summary = verify(log, path)
    assert (start, end, covered, ok) == (12, 30, 30, True), summary


async def test_export_a_time_range(log: Log) -> None:
    first = decode(log.records[0]).created
    # exchanges 5..9 (records 10..19) were created in [first + 5 s, first + 10 s)
    t0 = (first + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    t1 = (first + timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rc, path = await export(log, "--from", t0, "--to", t1)
    assert rc == 0
    start, end, _covered, ok, summary = verify(log, path)
    assert (start, end, ok) == (10, 30, True), summary
    with LogArchive(path) as a:
        assert a.manifest.selection == {"from": t0, "to": t1}


async def test_uncovered_records_are_refused_unless_asked(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(log.database_url)
    try:
        store = SqlMessageLogStore(engine)
        try:
            await store.append(decode(make_log(log.world, 1)[0]))
        finally:
            await store.close()
    finally:
        await engine.dispose()
    capsys.readouterr()
    rc, _ = await export(log, "--end", "41")
    assert rc == 1
    assert "records up to 41 of DEV/GOV/1001/ss1 are not covered by a checkpoint yet" in capsys.readouterr().err
    rc, path = await export(log, "--end", "41", "--include-uncovered")
    assert rc == 0
    _start, end, covered, ok, summary = verify(log, path)
    assert (end, covered, ok) == (41, 40, False)
    assert "FAIL records 40..40: coverage" in summary
