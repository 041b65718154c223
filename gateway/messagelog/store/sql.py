"""The message log in SQLite or PostgreSQL: :class:`SqlMessageLogStore` (I/O).

The reads, checkpoints, timestamps and retention, common to both dialects, go through SQLAlchemy's async
engine (the caller's); the batches go through the dialect's writer: :class:`~.sqlite.SqliteWriter` or
:class:`~.postgres.PostgresWriter`, mixed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import MessageLogError, TrustError
from gateway.messagelog import merkle
from gateway.messagelog.models import VERSION_TABLE, blobs, bodies, checkpoints, cosignatures, records, retention
from gateway.messagelog.store.base import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_BYTES,
    MessageLogStore,
    StoredCheckpoint,
    StoredCosignature,
    StoredRecord,
)
from gateway.messagelog.store.postgres import PostgresWriter
from gateway.messagelog.store.replay import ReplayBackstop
from gateway.messagelog.store.rows import _max_seq_query
from gateway.messagelog.store.sqlite import SqliteWriter
from gateway.storage.db import migrate
from gateway.trust.cosignature import Cosignature, parse_line

MIGRATIONS = Path(__file__).parent.parent / "migrations"


async def migrate_messagelog(engine: AsyncEngine) -> None:
    """Bring the message-log schema up to date (its own Alembic version table)."""
    await migrate(engine, MIGRATIONS, VERSION_TABLE)


class SqlMessageLogStore(ReplayBackstop, SqliteWriter, PostgresWriter, MessageLogStore):
    """The message log in SQLite or PostgreSQL (table ``messagelog_records``); the engine is the caller's.

    Batches go through :class:`~gateway.messagelog.store.sqlite.SqliteWriter` on SQLite (its blocking writer
    replaces the writer task), else through :class:`~gateway.messagelog.store.postgres.PostgresWriter`
    (``_write_batch``), each wrapped by :class:`~gateway.messagelog.store.replay.ReplayBackstop` (a replayed
    request id fails its own record only); everything else is common to both dialects.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        super().__init__(max_body_bytes=max_body_bytes, max_batch=max_batch)
        self._engine = engine
        self._conn = None  # the PostgreSQL writer's connection, once it has one
        self._next_seq = {}  # both writers: the next sequence number per origin, once read (rule 1)
        self._init_sqlite_writer(engine)

    @property
    def in_database(self) -> bool:
        return True

    @property
    def engine(self) -> AsyncEngine:
        """The engine this store reads through (for queries it does not offer, e.g. records by time)."""
        return self._engine

    async def close(self) -> None:
        await super().close()
        await self._drop_writer_connection()
        await self._close_sqlite_writer()

    async def _size(self, origin: str) -> int:
        async with self._engine.connect() as conn:
            top = await conn.scalar(_max_seq_query(origin))
        return 0 if top is None else int(top) + 1

    async def _read(self, origin: str, start: int, limit: int) -> list[StoredRecord]:
        query = (
            sa.select(records.c.seq, records.c.record, records.c.leaf_hash, records.c.body_ref, records.c.body_size)
            .where(records.c.origin == origin, records.c.seq >= start, records.c.record.is_not(None))
            .order_by(records.c.seq)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            result = await conn.execute(query)
            return [
                StoredRecord(origin=origin, seq=int(seq), encoded=bytes(data), leaf_hash=bytes(leaf),
                             body_ref=body_ref, body_size=None if body_size is None else int(body_size))
                for seq, data, leaf, body_ref, body_size in result
            ]

    async def _stage_body_chunk(self, body_id: str, n: int, data: bytes) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(bodies.insert(), [{"body_id": body_id, "n": n, "data": data}])

    async def _drop_body(self, body_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(bodies.delete().where(bodies.c.body_id == body_id))

    async def _body_chunk(self, body_id: str, n: int) -> bytes | None:
        async with self._engine.connect() as conn:
            data = await conn.scalar(sa.select(bodies.c.data).where(bodies.c.body_id == body_id, bodies.c.n == n))
        return None if data is None else bytes(data)

    async def _read_blobs(self, origin: str, names: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        async with self._engine.connect() as conn:
            for i in range(0, len(names), 500):  # bounded IN lists
                query = sa.select(blobs.c.sha256, blobs.c.data).where(
                    blobs.c.origin == origin, blobs.c.sha256.in_(names[i:i + 500]))
                out.update((str(name), bytes(data)) for name, data in await conn.execute(query))
        return out

    async def _leaf_hashes(self, origin: str, start: int, end: int) -> list[bytes]:
        query = (
            sa.select(records.c.leaf_hash)
            .where(records.c.origin == origin, records.c.seq >= start, records.c.seq < end)
            .order_by(records.c.seq)
        )
        async with self._engine.connect() as conn:
            return [bytes(h) for h in (await conn.execute(query)).scalars()]

    async def _add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        row = _checkpoint_row(checkpoint)
        async with self._engine.begin() as conn:
            exists = await conn.scalar(sa.select(sa.func.count()).select_from(checkpoints).where(
                checkpoints.c.origin == checkpoint.origin, checkpoints.c.size == checkpoint.size))
            if exists:
                raise MessageLogError(f"a checkpoint of {checkpoint.origin} at size {checkpoint.size} exists")
            await conn.execute(checkpoints.insert(), [row])

    async def _set_timestamp(
        self, origin: str, size: int, token: bytes, gen_time: datetime, tsa_name: str, tsa_cert: bytes,
    ) -> None:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                checkpoints.update()
                .where(checkpoints.c.origin == origin, checkpoints.c.size == size)
                .values(timestamp_token=token, timestamp_time=gen_time, tsa_name=tsa_name, tsa_cert=tsa_cert)
            )
            if result.rowcount != 1:
                raise MessageLogError(f"no checkpoint of {origin} at size {size} to timestamp")

    async def _checkpoints(
        self, origin: str, min_size: int, limit: int, unstamped_only: bool, *, newest: bool,
        stamped_only: bool = False,
    ) -> list[StoredCheckpoint]:
        query = sa.select(checkpoints).where(checkpoints.c.origin == origin, checkpoints.c.size >= min_size)
        if unstamped_only:
            query = query.where(checkpoints.c.timestamp_token.is_(None))
        if stamped_only:
            query = query.where(checkpoints.c.timestamp_token.is_not(None))
        query = query.order_by(checkpoints.c.size.desc() if newest else checkpoints.c.size).limit(limit)
        async with self._engine.connect() as conn:
            return [_checkpoint_of(dict(row._mapping)) for row in await conn.execute(query)]

    async def _add_cosignatures(self, origin: str, size: int, cosigs: Sequence[Cosignature]) -> int:
        async with self._engine.begin() as conn:
            have = {(str(w), bytes(k)) for w, k in await conn.execute(
                sa.select(cosignatures.c.witness, cosignatures.c.key_id)
                .where(cosignatures.c.origin == origin, cosignatures.c.size == size))}
            rows = [{"origin": origin, "size": size, "witness": c.name, "key_id": c.key_id, "timestamp": c.timestamp,
                     "line": c.line()} for c in cosigs if (c.name, c.key_id) not in have]
            if rows:
                await conn.execute(cosignatures.insert(), rows)
            return len(rows)

    async def _cosignatures(self, origin: str, size: int | None) -> list[StoredCosignature]:
        query = sa.select(cosignatures.c.size, cosignatures.c.line).where(cosignatures.c.origin == origin)
        if size is not None:
            query = query.where(cosignatures.c.size == size)
        async with self._engine.connect() as conn:
            return [StoredCosignature(origin=origin, size=int(s), cosignature=parse_line(bytes(line)))
                    for s, line in await conn.execute(query)]

    async def _pruned_before(self, origin: str) -> int:
        async with self._engine.connect() as conn:
            value = await conn.scalar(sa.select(retention.c.pruned_before).where(retention.c.origin == origin))
        return 0 if value is None else int(value)

    async def _prune(self, origin: str, before_seq: int, now: datetime) -> int:
        async with self._engine.begin() as conn:
            current = await conn.scalar(sa.select(retention.c.pruned_before).where(retention.c.origin == origin))
            if current is not None and int(current) >= before_seq:
                return 0
            await conn.execute(bodies.delete().where(bodies.c.body_id.in_(
                sa.select(records.c.body_ref).where(records.c.origin == origin, records.c.seq < before_seq,
                                                    records.c.body_ref.is_not(None)))))
            result = await conn.execute(
                records.update()
                .where(records.c.origin == origin, records.c.seq < before_seq, records.c.record.is_not(None))
                .values(record=None)
            )
            if current is None:
                await conn.execute(retention.insert(), [{"origin": origin, "pruned_before": before_seq,
                                                         "pruned_at": now}])
            else:
                await conn.execute(retention.update().where(retention.c.origin == origin)
                                   .values(pruned_before=before_seq, pruned_at=now))
            return int(result.rowcount)


def _checkpoint_row(c: StoredCheckpoint) -> dict[str, object]:
    return {
        "origin": c.origin, "size": c.size, "root_hash": c.root_hash, "note": c.note,
        "signing_cert": c.signing_cert, "frontier": b"".join(c.frontier), "created": c.created,
        "timestamp_token": c.timestamp_token, "timestamp_time": c.timestamp_time, "tsa_name": c.tsa_name,
        "tsa_cert": c.tsa_cert,
    }


def _checkpoint_of(row: Mapping[str, Any]) -> StoredCheckpoint:
    frontier = bytes(row["frontier"])
    if len(frontier) % merkle.HASH_SIZE:
        raise TrustError(f"stored checkpoint {row['origin']} at {row['size']}: frontier is not whole hashes")
    token = row["timestamp_token"]
    cert = row["tsa_cert"]
    return StoredCheckpoint(
        origin=row["origin"], size=int(row["size"]), root_hash=bytes(row["root_hash"]), note=bytes(row["note"]),
        signing_cert=bytes(row["signing_cert"]),
        frontier=tuple(frontier[i:i + merkle.HASH_SIZE] for i in range(0, len(frontier), merkle.HASH_SIZE)),
        created=row["created"], timestamp_token=None if token is None else bytes(token),
        timestamp_time=row["timestamp_time"], tsa_name=row["tsa_name"], tsa_cert=None if cert is None else bytes(cert),
    )


__all__ = ["MIGRATIONS", "SqlMessageLogStore", "migrate_messagelog"]
