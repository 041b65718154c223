"""Exporting a range of the message log as an archive for auditors (I/O).

Shared by ``gateway log export`` and the admin API's archive download (``GET /api/v1/messagelog/archive``);
the archive format is :mod:`gateway.messagelog.archive` (``docs/auditing.md``). The steps:

1. the range: every record covered by a checkpoint by default, or the records of a sequence-number range, or
   the smallest range holding every record created in a time range; its end is moved up to the next
   checkpoint, so that every exported record is covered by a signed, timestamped tree head (records after
   the latest checkpoint only on request);
2. the compact range of the records before the range (the archive's ``prefix``);
3. the records, exactly as stored, with their stored leaf hashes, and the blobs they name (their stapled
   certificates and OCSP responses); a record whose body the log stores apart goes into a records member of
   its own, its encoding with the body written piece by piece from the stored chunks;
4. the checkpoints inside the range with their timestamp tokens and their witnesses' cosignatures, the log's
   signing certificates and the signed global configuration(s) naming the trusted CAs and TSAs and the
   witness policy (docs/witness.md section 5).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import Conflict, NotFound, RequestError
from gateway.messagelog import merkle
from gateway.messagelog.archive import ArchiveWriter, Manifest, blob_member
from gateway.messagelog.models import checkpoints as checkpoint_table
from gateway.messagelog.models import records
from gateway.messagelog.origins import is_origin_of
from gateway.messagelog.record import blob_refs
from gateway.messagelog.store import MAX_LEAF_READ, MAX_READ, MessageLogStore, StoredCheckpoint, StoredRecord

_PAGE = 1000  # checkpoints per store call


async def all_checkpoints(store: MessageLogStore, origin: str) -> list[StoredCheckpoint]:
    """Every checkpoint of ``origin``, smallest first.

    Raises:
        MessageLogError: the store failed.
    """
    out: list[StoredCheckpoint] = []
    while True:
        page = await store.checkpoints(origin, min_size=out[-1].size + 1 if out else 0, limit=_PAGE)
        out.extend(page)
        if len(page) < _PAGE:
            return out


# Every distinct origin through the primary key's index, one index probe per origin ("loose index scan"):
# SELECT DISTINCT would read every row's key on PostgreSQL.
_ORIGINS_SQL = """
WITH RECURSIVE o(origin) AS (
  SELECT MIN(origin) FROM {table}
  UNION ALL
  SELECT (SELECT MIN(origin) FROM {table} WHERE origin > o.origin) FROM o WHERE o.origin IS NOT NULL
) SELECT origin FROM o WHERE origin IS NOT NULL
"""


async def server_origins(engine: AsyncEngine, server: str) -> list[str]:
    """Every log origin of ``server`` (``INSTANCE/CLASS/MEMBER/SERVERCODE``) that has records or checkpoints
    in the database: one per worker and node that ever logged (docs/messagelog.md section 5), sorted."""
    found: set[str] = set()
    async with engine.connect() as conn:
        for table in (records.name, checkpoint_table.name):
            found.update(str(o) for o in (await conn.execute(sa.text(_ORIGINS_SQL.format(table=table)))).scalars())
    return sorted(o for o in found if is_origin_of(o, server))


def archive_file_name(origin: str) -> str:
    """The file name of ``origin``'s archive in a directory of several: ``/`` becomes ``_``, which neither
    identifier parts nor node names contain, so that different origins get different names."""
    return origin.replace("/", "_") + ".zip"


async def seq_range_for_times(
    engine: AsyncEngine, origin: str, start: datetime | None, end: datetime | None,
) -> tuple[int, int] | None:
    """The smallest sequence-number range holding every record of ``origin`` created in ``[start, end)``,
    or ``None`` if there is none."""
    cond = [records.c.origin == origin]
    if start is not None:
        cond.append(records.c.created >= start)
    if end is not None:
        cond.append(records.c.created < end)
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(sa.func.min(records.c.seq), sa.func.max(records.c.seq)).where(*cond))).one()
    return None if row[0] is None else (int(row[0]), int(row[1]) + 1)


async def choose_range(
    store: MessageLogStore, origin: str, checkpoints: Sequence[StoredCheckpoint], *,
    start: int | None = None, end: int | None = None, from_time: datetime | None = None,
    to_time: datetime | None = None, engine: AsyncEngine | None = None, include_uncovered: bool = False,
) -> tuple[int, int, dict[str, Any]]:
    """Step 1: ``(start, end, selection)`` of the records to export.

    Raises:
        RequestError: the range is not held online, no record was created in the time range, a time range
            without a SQL store, or records not yet covered by a checkpoint (unless ``include_uncovered``).
    """
    size = await store.size(origin)
    first = await store.pruned_before(origin)
    lo, hi = first, (checkpoints[-1].size if checkpoints else 0)
    selection: dict[str, Any] = {}
    if from_time is not None or to_time is not None:
        if engine is None:
            raise RequestError("selecting records by time needs the SQL message log")
        selection.update({"from": None if from_time is None else from_time.isoformat(),
                          "to": None if to_time is None else to_time.isoformat()})
        found = await seq_range_for_times(engine, origin, from_time, to_time)
        if found is None:
            raise NotFound(f"log {origin} has no records created in the given time range")
        lo, hi = found
    if start is not None:
        lo = selection["start"] = start
    if end is not None:
        hi = selection["end"] = end
    if not first <= lo <= hi <= size:
        raise RequestError(
            f"range {lo}..{hi} is not inside the records {first}..{size} of {origin} held online",
            hint="records below the first have been pruned: use the archive exported before pruning",
        )
    covering = [c for c in checkpoints if c.size >= hi]
    if covering:
        hi = covering[0].size  # end at a checkpoint, so that every exported record is covered
    elif not include_uncovered:
        raise Conflict(
            f"records up to {hi} of {origin} are not covered by a checkpoint yet"
            + (f" (the latest covers {checkpoints[-1].size})" if checkpoints else " (there is none yet)"),
            hint="wait for the next checkpoint, or ask for records after the latest checkpoint too",
        )
    return lo, hi, selection


async def write_range(
    store: MessageLogStore, origin: str, path: str | Path, *, start: int, end: int,
    checkpoints: Sequence[StoredCheckpoint], globalconfs: Sequence[bytes], selection: dict[str, Any],
    now: datetime, progress: Callable[[int], None] | None = None,
) -> Manifest:
    """Steps 2-4: write the archive of records ``start..end-1`` to ``path`` (atomically); ``progress`` is told
    how many records are written after each batch.

    Raises:
        RequestError: a record of the range is not held online (pruned meanwhile).
        MessageLogError: the store failed.
    """
    # (2) the compact range of the records before the range
    tree = merkle.MerkleTree()
    while tree.size < start:
        tree.extend(await store.leaf_hashes(origin, tree.size, min(start, tree.size + MAX_LEAF_READ)))
    writer = ArchiveWriter(path, origin=origin, start=start, prefix=tree.frontier or [], exported_at=now,
                           selection=selection)
    try:
        # (3) the records, as stored, and the blobs they name: the certificates to certs/, the OCSP responses
        #     to ocsp/ (a blob the database lacks is left out, and the verifier names the records that need it)
        seq = start
        while seq < end:
            batch = await store.read(origin, start=seq, limit=min(MAX_READ, end - seq))
            if not batch or batch[0].seq != seq or batch[-1].seq != seq + len(batch) - 1:
                raise RequestError(f"record {seq} of {origin} is not held online (pruned?)")
            # the records as stored; one whose body is stored apart as a member of its own, streamed
            whole: list[tuple[bytes, bytes]] = []
            for rec in batch:
                if rec.body_ref is None:
                    whole.append((rec.encoded, rec.leaf_hash))
                    continue
                await asyncio.to_thread(writer.add_records, whole)
                whole = []
                await _write_streamed(store, writer, rec)
            await asyncio.to_thread(writer.add_records, whole)
            for rec in batch:
                cert, ocsp = blob_refs(rec.encoded)
                for directory, name, add in (("certs", cert, writer.add_certificate),
                                             ("ocsp", ocsp, writer.add_ocsp_response)):
                    if name is not None and name in rec.blobs and not writer.has_member(blob_member(directory, name)):
                        add(rec.blobs[name])
            seq += len(batch)
            if progress is not None:
                progress(seq - start)
        # (4) checkpoints inside the range with their cosignatures, the log's signing certificates, global
        #     configurations
        lines: dict[int, list[bytes]] = {}
        for kept in await store.cosignatures(origin):
            lines.setdefault(kept.size, []).append(kept.cosignature.line())
        for c in checkpoints:
            if start <= c.size <= end:
                writer.add_checkpoint(c.note, c.timestamp_token, b"".join(lines.get(c.size, ())) or None)
        for cert_der in sorted({c.signing_cert for c in checkpoints}):
            writer.add_certificate(cert_der)
        for envelope in globalconfs:
            writer.add_globalconf(envelope)
        return await asyncio.to_thread(writer.close)
    except BaseException:
        writer.abort()
        raise


async def _write_streamed(store: MessageLogStore, writer: ArchiveWriter, rec: StoredRecord) -> None:
    """A record whose body is stored apart, into a records member of its own, piece by piece: its encoding with
    the body, as stored (the verifier judges it), with no more than one piece in memory."""
    member = await asyncio.to_thread(writer.open_record, rec.leaf_hash)
    try:
        async for piece in store.encoded_chunks(rec, check=False):
            await asyncio.to_thread(member.write, piece)
        await asyncio.to_thread(member.write, b"\n")
    finally:
        await asyncio.to_thread(member.close)


__all__ = ["all_checkpoints", "archive_file_name", "choose_range", "seq_range_for_times", "server_origins",
           "write_range"]
