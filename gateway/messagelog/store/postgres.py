"""The PostgreSQL writer of :class:`~gateway.messagelog.store.sql.SqlMessageLogStore` (I/O).

Each batch is one transaction through SQLAlchemy's async engine (its new blobs, its records, their usage-index
rows), on a connection the writer keeps (no pool checkout per batch; one left idle over a second is pinged through
the pool first), with the sequence numbers kept between batches (rule 1: read once per origin, forgotten on any
failure). :class:`PostgresWriter` is a mixin of ``SqlMessageLogStore``; it serves any dialect but SQLite, which
has its own writer (:mod:`gateway.messagelog.store.sqlite`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.messagelog.models import blobs, records, usage_index
from gateway.messagelog.store.base import Outcome, PendingRecord
from gateway.messagelog.store.rows import _blob_rows, _index_rows, _max_seq_query, _new_blobs, _rows

IDLE_RECHECK_SECONDS = 1.0  # a kept connection idle longer is pinged (through the pool) before its next batch


class PostgresWriter:
    """The PostgreSQL writer: one transaction per batch on a connection of its own."""

    _engine: AsyncEngine
    _conn: AsyncConnection | None
    _next_seq: dict[str, int]  # the store's: the next sequence number per origin (rule 1)
    _blobs_stored: set[tuple[str, str]]  # the store's: blobs known to be committed
    _conn_used_at: float = 0.0  # time.monotonic() of the kept connection's last batch

    @property
    def writer_engine(self) -> sa.Engine:
        """The engine whose connection commits the batches on PostgreSQL (for instrumentation; the SQLite writer
        uses the driver directly: see ``sqlite_trace``)."""
        return self._engine.sync_engine

    async def _writer_connection(self) -> AsyncConnection:
        # The writer keeps one connection: no pool checkout and no sequence query per batch. One left idle
        # longer than IDLE_RECHECK_SECONDS goes back to the pool and is checked out again, which pings it
        # (pool_pre_ping): a connection the network or the database dropped meanwhile is found before the
        # batch is written, not by the batch (whose exchanges would then be refused once the database is back).
        now = time.monotonic()
        if self._conn is not None and not self._conn.closed and now - self._conn_used_at > IDLE_RECHECK_SECONDS:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close()
        if self._conn is None or self._conn.closed:
            self._conn = await self._engine.connect()
        self._conn_used_at = now
        return self._conn

    async def _drop_writer_connection(self) -> None:
        self._next_seq.clear()
        self._blobs_stored.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _write_batch(self, batch: Sequence[PendingRecord]) -> Sequence[Outcome]:
        try:
            conn = await self._writer_connection()
            async with conn.begin():
                next_seq = dict(self._next_seq)  # (1) as in _write_batch_sync
                for origin in dict.fromkeys(p.record.origin for p in batch):
                    if origin not in next_seq:
                        top = await conn.scalar(_max_seq_query(origin))
                        next_seq[origin] = 0 if top is None else int(top) + 1
                seqs, rows = _rows(batch, next_seq)
                index_rows = _index_rows(batch, seqs)
                # the blobs not known to be stored, in the same transaction (one already there is skipped)
                new_blobs = _new_blobs(batch, self._blobs_stored)
                if new_blobs:
                    insert = (postgresql.insert(blobs).on_conflict_do_nothing()
                              if conn.dialect.name == "postgresql" else blobs.insert())
                    await conn.execute(insert, _blob_rows(new_blobs))
                await conn.execute(records.insert(), rows)
                if index_rows:  # the records' usage-index rows, in their transaction
                    await conn.execute(usage_index.insert(), index_rows)
        except BaseException:
            await self._drop_writer_connection()
            raise
        self._next_seq = next_seq
        self._blobs_stored.update(new_blobs)
        return seqs


__all__ = ["PostgresWriter"]
