"""Large bodies stored apart from their records, in chunks (MessageLogStore.append_body_apart), on SQLite and
PostgreSQL and in the in-memory double: the record is the one whose encoding has the body, leaf hash for leaf
hash; the body reads back chunk by chunk; an altered or missing chunk is found; what is refused leaves nothing;
and a large body passes in bounded memory."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from archive_kit import ORIGIN as ARCHIVE_ORIGIN
from archive_kit import LogWorld, exchange_records, make_world, rewrite, signed_checkpoint
from bodies_kit import RSS_BOUND, body_of, reset_peak, status_kib
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.ext.asyncio import AsyncEngine
from test_messagelog_store import ORIGIN_A, engine, rec  # noqa: F401  # engine: the fixture

from gateway.errors import MessageLogError, TrustError
from gateway.messagelog.archive import LogArchive
from gateway.messagelog.export import write_range
from gateway.messagelog.merkle import MerkleTree
from gateway.messagelog.models import bodies
from gateway.messagelog.record import BODY_HEAD, LogRecord, leaf_hash
from gateway.messagelog.store import (
    BODY_CHUNK_BYTES,
    MemoryMessageLogStore,
    MessageLogStore,
    SqlMessageLogStore,
    StoredCheckpoint,
    migrate_messagelog,
)
from gateway.messagelog.verify import verify_archive
from gateway.messagelog.verify.large import LARGE_MEMBER_BYTES
from gateway.messagelog.verify.parallel import runner_for
from gateway.proxy.spool import Spool, spool_directory
from gateway.storage.db import make_engine

pytestmark = pytest.mark.integration


async def chunks_of(data: bytes, piece: int = 200_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i:i + piece]


async def joined(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


async def body_rows(store: MessageLogStore) -> int:
    if isinstance(store, MemoryMessageLogStore):
        return store.body_count()
    assert isinstance(store, SqlMessageLogStore)
    async with store.engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(bodies)) or 0)


@pytest.fixture(params=["sql", "memory"])
async def store(request: pytest.FixtureRequest, engine: AsyncEngine) -> AsyncIterator[MessageLogStore]:  # noqa: F811
    s: MessageLogStore = (SqlMessageLogStore(engine, max_body_bytes=2 * 2**30) if request.param == "sql"
                          else MemoryMessageLogStore(max_body_bytes=2 * 2**30))
    yield s
    await s.close()


@pytest.mark.parametrize("size", [0, 5, BODY_CHUNK_BYTES, 2 * BODY_CHUNK_BYTES + 12_345])
async def test_a_body_stored_apart_makes_the_record_with_that_body(store: MessageLogStore, size: int) -> None:
    body = body_of(size)
    await store.append(rec(0))
    appended = await store.append_body_apart(rec(1, body=None), chunks_of(body))
    await store.append(rec(2))
    whole = rec(1, body=body).encode()
    assert appended.seq == 1 and appended.leaf_hash == leaf_hash(whole)
    assert await store.leaf_hashes(ORIGIN_A, 0, 3) == [leaf_hash(rec(i).encode()) if i != 1 else leaf_hash(whole)
                                                      for i in range(3)]
    first, stored, last = await store.read(ORIGIN_A)
    assert first.body_ref is None and last.body_ref is None and stored.body_size == size
    assert stored.decode() == rec(1, body=None)  # the record without its body; the body is read apart
    assert await joined(store.body_chunks(stored)) == body
    assert await joined(store.encoded_chunks(stored)) == whole
    with pytest.raises(MessageLogError, match="record 0 of DEV/GOV/1001/ss1 has no body stored apart"):
        await joined(store.body_chunks(first))


async def test_refusals_leave_nothing_behind(store: MessageLogStore) -> None:
    store.max_body_bytes = 3 * BODY_CHUNK_BYTES
    with pytest.raises(MessageLogError, match=r"message body of more than 3145728 bytes exceeds the loggable maximum"):
        await store.append_body_apart(rec(0, body=None), chunks_of(body_of(4 * BODY_CHUNK_BYTES)))

    async def failing() -> AsyncIterator[bytes]:
        yield body_of(BODY_CHUNK_BYTES + 1)
        raise OSError("spool file unreadable")

    with pytest.raises(MessageLogError, match="message body could not be logged: OSError: spool file unreadable"):
        await store.append_body_apart(rec(0, body=None), failing())
    with pytest.raises(MessageLogError, match=r"stored apart must carry none itself"):
        await store.append_body_apart(rec(0), chunks_of(b"x"))
    assert await store.size(ORIGIN_A) == 0 and await body_rows(store) == 0
    await store.close()
    with pytest.raises(MessageLogError, match="the message log is closed"):
        await store.append_body_apart(rec(0, body=None), chunks_of(b"x"))


async def test_an_altered_or_missing_chunk_is_found(engine: AsyncEngine) -> None:  # noqa: F811
    store = SqlMessageLogStore(engine, max_body_bytes=2**30)
    try:
        body = body_of(2 * BODY_CHUNK_BYTES + 1)
        await store.append_body_apart(rec(0, body=None), chunks_of(body))
        (stored,) = await store.read(ORIGIN_A)
        async with engine.begin() as conn:
            await conn.execute(bodies.update().where(bodies.c.body_id == stored.body_ref, bodies.c.n == 1)
                               .values(data=b"y" * BODY_CHUNK_BYTES))
        with pytest.raises(TrustError, match="does not hash to its leaf hash: the record or its body was altered"):
            await joined(store.encoded_chunks(stored))
        async with engine.begin() as conn:
            await conn.execute(bodies.delete().where(bodies.c.body_id == stored.body_ref, bodies.c.n == 2))
        with pytest.raises(MessageLogError, match=r"holds 2097152 bytes in 2 chunks, not the 2097153"):
            await joined(store.body_chunks(stored))
    finally:
        await store.close()


LARGE = 128 * 2**20  # bytes


async def test_a_large_body_is_logged_from_a_spool_in_bounded_memory(
    engine: AsyncEngine, tmp_path: Path,  # noqa: F811
) -> None:
    piece = body_of(256 * 1024)
    expected = hashlib.sha256()
    async with Spool(directory=spool_directory(tmp_path / "s"), max_bytes=2 * 2**30) as spool:
        for _ in range(LARGE // len(piece)):
            await spool.write(piece)
            expected.update(piece)
        await spool.finish()
        store = SqlMessageLogStore(engine, max_body_bytes=2 * 2**30)
        try:
            await store.append(rec(0))  # the writer's own memory in the baseline
            if not reset_peak():
                pytest.skip("this kernel does not let a process reset its peak RSS (clear_refs)")
            before = status_kib("VmRSS")
            appended = await store.append_body_apart(rec(1, body=None), spool.chunks())
            (stored,) = await store.read(ORIGIN_A, start=1)
            got = hashlib.sha256()
            async for chunk in store.body_chunks(stored):
                got.update(chunk)
            growth = (status_kib("VmHWM") - before) * 1024
        finally:
            await store.close()
    assert appended.seq == 1 and stored.body_size == LARGE and got.digest() == expected.digest()
    print(f"peak RSS growth {growth / 2**20:.1f} MiB logging and reading back {LARGE >> 20} MiB")
    assert growth < RSS_BOUND, f"peak RSS grew by {growth / 2**20:.1f} MiB for a {LARGE >> 20} MiB body"


# ---- export and offline verification of a record whose body is stored apart ---------------------------------


async def exported(engine: AsyncEngine, tmp_path: Path, big: bytes) -> tuple[LogWorld, list[LogRecord], Path]:  # noqa: F811
    """Three exchanges logged, the middle one's response with ``big`` stored apart; a checkpoint over them; the
    archive exported."""
    world = make_world(tmp_path)
    records: list[LogRecord] = []
    for i in range(3):
        records += exchange_records(world, created=world.now - timedelta(minutes=1, seconds=-i),
                                    body=big if i == 1 else b'{"id":1}')
    leaves = [leaf_hash(r.encode()) for r in records]
    store = SqlMessageLogStore(engine, max_body_bytes=2**30)
    try:
        for r in records:
            if r.body == big:
                await store.append_body_apart(dataclasses.replace(r, body=None), chunks_of(big))
            else:
                await store.append(r)
        assert await store.leaf_hashes(ARCHIVE_ORIGIN, 0, len(records)) == leaves
        note, token = signed_checkpoint(world, leaves, len(records))
        tree = MerkleTree()
        tree.extend(leaves)
        checkpoint = StoredCheckpoint(
            origin=ARCHIVE_ORIGIN, size=len(records), root_hash=tree.root(), note=note,
            signing_cert=world.consumer.cert.public_bytes(Encoding.DER), frontier=tuple(tree.frontier or ()),
            created=world.now, timestamp_token=token, timestamp_time=world.now, tsa_name="Test TSA",
            tsa_cert=world.pki.tsa_cert.public_bytes(Encoding.DER))
        await store.add_checkpoint(checkpoint)
        path = tmp_path / "archive.zip"
        manifest = await write_range(store, ARCHIVE_ORIGIN, path, start=0, end=len(records),
                                     checkpoints=[checkpoint], globalconfs=[world.envelope], selection={},
                                     now=world.now)
    finally:
        await store.close()
    # the large record is a member of its own, holding its encoding with the body, as a small one's
    assert [(c.first, c.count) for c in manifest.chunks] == [(0, 3), (3, 1), (4, 2)]
    return world, records, path


SMALL_APART = 3 * BODY_CHUNK_BYTES + 7  # bytes: a member read whole by the verifier
LARGE_APART = 20 * 2**20 + 1  # bytes: a member over LARGE_MEMBER_BYTES, read piece by piece


@pytest.mark.parametrize(("size", "workers"), [(SMALL_APART, 1), (SMALL_APART, 2), (LARGE_APART, 1),
                                                (LARGE_APART, 2)])
async def test_export_streams_a_body_stored_apart_and_the_archive_verifies(
    engine: AsyncEngine, tmp_path: Path, size: int, workers: int,  # noqa: F811
) -> None:
    world, records, path = await exported(engine, tmp_path, body_of(size))
    with LogArchive(path) as archive:
        member = archive.manifest.chunks[1]
        assert archive.chunk_span(member).size == len(records[3].encode()) + 1
        if size == SMALL_APART:
            assert archive.read_chunk(member) == records[3].encode() + b"\n"
        reset = reset_peak()
        before = status_kib("VmRSS")
        report = verify_archive(archive, world.anchor, runner=runner_for(workers, len(archive.manifest.chunks)))
        growth = (status_kib("VmHWM") - before) * 1024
    assert report.ok and (report.start, report.end, report.covered_until) == (0, 6, 6), report.summary()
    if size == LARGE_APART and workers == 1 and reset:  # checked in this process, piece by piece
        print(f"verify: peak RSS growth {growth / 2**20:.1f} MiB for a record of {len(records[3].encode()) >> 20} MiB")
        assert growth < LARGE_MEMBER_BYTES


@pytest.mark.parametrize(("edit", "problem"), [
    ("body byte", "body"),  # read piece by piece: the body does not match the signed digest
    ("base64 padding", "malformed"),  # not the one encoding: the usual check of the whole member says so
    ("digest", "signature"),  # the digest is signed
])
async def test_an_altered_large_record_in_an_archive_is_found(tmp_path: Path, edit: str, problem: str) -> None:
    # the archive, not the database, is altered: one backend (SQLite) makes it
    sqlite_engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")
    try:
        await migrate_messagelog(sqlite_engine)
        world, _, path = await exported(sqlite_engine, tmp_path, body_of(LARGE_APART))
    finally:
        await sqlite_engine.dispose()
    with LogArchive(path) as archive:
        name = archive.manifest.chunks[1].name

    def alter(data: bytes) -> bytes:
        if edit == "body byte":  # one base64 character of the body: its leaf hash and its digest differ
            i = len(BODY_HEAD) + 1000
            return data[:i] + (b"A" if data[i:i + 1] != b"A" else b"B") + data[i + 1:]
        if edit == "base64 padding":  # not the one encoding: the whole member goes to the usual check
            quote = data.index(b'"', len(BODY_HEAD))
            return data[:quote] + b"====" + data[quote:]
        return data.replace(b'"body_digest":"sha-256=:', b'"body_digest":"sha-256=:A', 1)

    altered = rewrite(path, tmp_path / "altered.zip", {name: alter})
    with LogArchive(altered) as archive:
        report = verify_archive(archive, world.anchor)
    # the record is named, with what is wrong with it, and its leaf hash differs from leaves.bin's
    assert {(f.seq, f.problem) for f in report.findings if f.seq is not None} == {(3, "altered"), (3, problem)}
