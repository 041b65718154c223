"""``gateway log export`` from a real message-log database (SQLite and PostgreSQL), then offline verification.

The log is filled through :class:`SqlMessageLogStore` with properly signed records and checkpoints
(``tests/archive_kit.py``); the export runs through the CLI entry point, as an operator would run it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from archive_kit import LogWorld, lines_edit, make_log, make_world, rewrite, signed_checkpoint
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.cli import main
from gateway.messagelog import merkle
from gateway.messagelog.archive import LogArchive
from gateway.messagelog.record import blob_name, decode
from gateway.messagelog.store import SqlMessageLogStore, StoredCheckpoint, migrate_messagelog
from gateway.messagelog.verify import VerifyReport, verify_archive
from gateway.storage.db import make_engine
from gateway.trust.canonical import canonical_bytes

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
                await store.append(decode(r, world.blobs))
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
        # the exact stored bytes, all three checkpoints with tokens, the blobs the records name (both parties'
        # certificates and OCSP responses; the log's certificate among them), each once
        assert a.read_chunk(a.manifest.chunks[0]) == b"".join(r + b"\n" for r in log.records)
        assert [c.timestamp is not None for c in a.checkpoints] == [True, True, True]
        assert sorted(a.certificates) == sorted([log.world.consumer.cert.public_bytes(Encoding.DER),
                                                 log.world.provider.cert.public_bytes(Encoding.DER)])
        assert sorted(a.ocsp_responses) == sorted([log.world.consumer_ocsp, log.world.provider_ocsp])
        assert a.globalconfs == (log.world.envelope,)
        # round trip: every record decodes with the archive's blobs alone to the record that was logged
        blobs = dict(a.blobs())
        assert blobs == log.world.blobs
        lines = a.read_chunk(a.manifest.chunks[0]).split(b"\n")[:-1]
        assert [decode(line, blobs) for line in lines] == [decode(r, log.world.blobs) for r in log.records]


async def test_export_a_sequence_range_from_the_middle(log: Log) -> None:
    # records 12..24 asked for: extended to the checkpoint at 30; the prefix covers 0..11
    rc, path = await export(log, "--start", "12", "--end", "25")
    assert rc == 0
    start, end, covered, ok, summary = verify(log, path)
    assert (start, end, covered, ok) == (12, 30, 30, True), summary


async def test_export_a_time_range(log: Log) -> None:
    first = decode(log.records[0], log.world.blobs).created
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
            await store.append(decode(make_log(log.world, 1)[0], log.world.blobs))
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


def _verify(path: Path, log: Log) -> VerifyReport:
    with LogArchive(path) as a:
        return verify_archive(a, log.world.anchor)


def _blob_edits(path: Path, name: str, data: bytes | None) -> dict[str, Callable[[bytes], bytes | None]]:
    """Edits of an archive that replace blob ``name``'s bytes with ``data``, or remove it (and its mention in the
    manifest) when ``data`` is None."""
    with LogArchive(path) as a:
        member = next(m for m in (*a.manifest.certificates, *a.manifest.ocsp_responses) if name in m)

    def manifest(raw: bytes) -> bytes:
        m = json.loads(raw)
        for key in ("certificates", "ocsp_responses"):
            m[key] = [n for n in m[key] if n != member]
        return canonical_bytes(m)

    if data is None:
        return {member: lambda _: None, "manifest.json": manifest}
    return {member: lambda _: data}


async def test_a_missing_or_altered_blob_is_found_and_named(log: Log) -> None:
    rc, path = await export(log)
    assert rc == 0
    provider_cert = log.world.provider.cert.public_bytes(Encoding.DER)
    name = blob_name(provider_cert)
    responses = {i for i, r in enumerate(log.records) if i % 2}  # the provider signed every response
    # removed: each record that names it says so; nothing else is wrong
    report = _verify(rewrite(path, log.dir / "missing.zip", _blob_edits(path, name, None)), log)
    assert {(f.seq, f.problem) for f in report.errors} == {(i, "blob") for i in responses}, report.summary()
    assert all(f"is blob {name}, which the archive does not hold (missing)" in f.message for f in report.errors)
    # altered: the member itself, once, and each record that names it
    altered = provider_cert[:-1] + bytes([provider_cert[-1] ^ 1])
    report = _verify(rewrite(path, log.dir / "altered.zip", _blob_edits(path, name, altered)), log)
    assert [(f.where, f.problem) for f in report.errors if f.seq is None] == [("archive", "blob")]
    assert f"certs/{name}.der: its bytes do not hash to its name (altered)" in report.errors[0].message
    assert {(f.seq, f.problem) for f in report.errors if f.seq is not None} == {(i, "blob") for i in responses}
    assert all("do not hash to that name (altered)" in f.message for f in report.errors if f.seq is not None)


async def test_a_tampered_reference_is_found(log: Log) -> None:
    rc, path = await export(log)
    assert rc == 0
    consumer_ocsp, provider_ocsp = blob_name(log.world.consumer_ocsp), blob_name(log.world.provider_ocsp)
    with LogArchive(path) as a:
        member = a.manifest.chunks[0].name

    def swap(lines: list[bytes]) -> list[bytes]:  # record 2 (a request) names the provider's OCSP response
        lines[2] = lines[2].replace(consumer_ocsp.encode(), provider_ocsp.encode())
        return lines

    report = _verify(rewrite(path, log.dir / "ref.zip", {member: lines_edit(swap)}), log)
    found = {(f.where, f.problem) for f in report.errors}
    assert ("record 2", "altered") in found, report.summary()  # its bytes do not hash to the stored leaf hash
    assert ("record 2", "certificate") in found  # what it names now: an OCSP response about another certificate
    assert {f.seq for f in report.errors if f.seq is not None} == {2}
