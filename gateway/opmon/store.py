"""Operational-monitoring records in SQLite or PostgreSQL: :class:`OpMonStore` (I/O).

Written in batches, one ``executemany`` of one cached ``INSERT`` in one transaction per batch
(:meth:`OpMonStore.insert`, called by
:class:`gateway.opmon.writer.OpMonWriter` only); read newest first with filters and an offset page and the
total of the filtered rows (:meth:`OpMonStore.query`); pruned by age (:meth:`OpMonStore.prune`). The engine is
the caller's (the security server's database).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import DatabaseError
from gateway.opmon.models import VERSION_TABLE, records
from gateway.opmon.record import OpQuery, OpRecord
from gateway.storage.db import migrate
from gateway.storage.transaction import describe, transaction

MIGRATIONS = Path(__file__).parent / "migrations"
# records per batch: binding costs the event loop about 20 µs per record (docs/operations.md, "Operational
# monitoring"), so a batch of 1000 holds it for some 20 ms
MAX_BATCH = 1000
_COLUMNS = tuple(c.name for c in records.columns if c.name != "id")


def _database_error(e: SQLAlchemyError | OSError) -> DatabaseError:
    return DatabaseError(f"operational monitoring database error: {describe(e)}")


def _row(r: OpRecord) -> dict[str, Any]:
    return {name: getattr(r, name) for name in _COLUMNS}


def _record(row: sa.Row[Any]) -> OpRecord:
    m = row._mapping
    return OpRecord(**{name: m[name] for name in _COLUMNS})


class OpMonStore:
    """The ``opmon_records`` table (module docstring)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def migrate(self) -> None:
        """Bring the schema up to date (its own Alembic version table)."""
        await migrate(self._engine, MIGRATIONS, VERSION_TABLE)

    async def insert(self, batch: Sequence[OpRecord]) -> None:
        """Write ``batch`` (at most :data:`MAX_BATCH` records): one executemany, one transaction.

        Raises:
            DatabaseError: the database refused or could not be reached (nothing of the batch is written).
        """
        if not batch:
            return
        if len(batch) > MAX_BATCH:
            raise ValueError(f"a batch of {len(batch)} records is more than {MAX_BATCH}")
        async with transaction(self._engine.begin(), database_error=_database_error) as conn:
            await conn.execute(sa.insert(records), [_row(r) for r in batch])

    async def query(self, q: OpQuery, *, limit: int, offset: int) -> tuple[list[OpRecord], int]:
        """The records matching ``q``, newest ``request_in`` first, ``limit`` of them from ``offset``, and
        how many match in all.

        Raises:
            DatabaseError: the database could not be read.
        """
        where: list[sa.ColumnElement[bool]] = []
        if q.since is not None:
            where.append(records.c.request_in >= q.since)
        if q.until is not None:
            where.append(records.c.request_in < q.until)
        for name in ("client", "service", "side", "request_id", "message_id"):
            value = getattr(q, name)
            if value is not None:
                where.append(records.c[name] == value)
        if q.outcome == "ok":
            where.append(records.c.fault.is_(None))
        elif q.outcome == "failed":
            where.append(records.c.fault.is_not(None))
        select = sa.select(records).where(*where).order_by(records.c.request_in.desc(), records.c.id.desc())
        count = sa.select(sa.func.count()).select_from(records).where(*where)
        async with transaction(self._engine.connect(), database_error=_database_error) as conn:
            total = int((await conn.execute(count)).scalar_one())
            rows = (await conn.execute(select.limit(limit).offset(offset))).all()
        return [_record(r) for r in rows], total

    async def prune(self, before: datetime) -> int:
        """Delete the records whose request arrived before ``before``; how many were deleted.

        Raises:
            DatabaseError: the database refused or could not be reached.
        """
        async with transaction(self._engine.begin(), database_error=_database_error) as conn:
            result = await conn.execute(sa.delete(records).where(records.c.request_in < before))
        return int(result.rowcount or 0)


__all__ = ["MAX_BATCH", "OpMonStore"]
