"""Operational-monitoring records in SQLite or PostgreSQL: :class:`OpMonStore` (I/O).

Written in batches, one ``executemany`` of one ``INSERT`` compiled once, in one transaction per batch
(:meth:`OpMonStore.insert`, called by :class:`gateway.opmon.writer.OpMonWriter` only), through the driver
rather than SQLAlchemy's execution, which cost the event loop 0.4-0.6 ms per lone record and 25 µs per record
in batches of 100 (docs/performance.md section 10): on an SQLite file, by the plain ``sqlite3`` driver on a
thread of its own (the rows are bound there too; the event loop only hands the batch over), on PostgreSQL by
asyncpg's ``executemany`` (atomic: one implicit transaction) on a connection the store keeps. The values
stored are what SQLAlchemy would store (its bind processors are applied). Read newest first with filters and
an offset page and the total of the filtered rows (:meth:`OpMonStore.query`); pruned by age
(:meth:`OpMonStore.prune`). The engine is the caller's (the security server's database, or on SQLite the
file of its own that ``server/runtime.py`` opens); :meth:`OpMonStore.close` ends the writer's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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
_VALUES = operator.attrgetter(*_COLUMNS)  # a record's column values, in _COLUMNS' order


def _database_error(e: BaseException) -> DatabaseError:
    return DatabaseError(f"operational monitoring database error: {describe(e)}")


def _driver_insert(dialect: sa.Dialect) -> tuple[str, list[tuple[int, Callable[[Any], Any]]]]:
    """The INSERT of one row compiled for ``dialect`` (positional parameters in ``_COLUMNS``' order, no
    RETURNING), and the bind processors SQLAlchemy would apply, by parameter index (the timestamps)."""
    compiled = records.insert().inline().compile(dialect=dialect, column_keys=list(_COLUMNS))
    if tuple(compiled.positiontup or ()) != _COLUMNS:  # pragma: no cover - a dialect with named parameters
        raise DatabaseError(f"unexpected parameters in the operational monitoring insert for {dialect.name}")
    binds = [(i, records.c[n].type.dialect_impl(dialect).bind_processor(dialect)) for i, n in enumerate(_COLUMNS)]
    return compiled.string, [(i, bind) for i, bind in binds if bind is not None]


def _bound(batch: Sequence[OpRecord], binds: Sequence[tuple[int, Callable[[Any], Any]]]) -> list[list[Any]]:
    """The batch's rows as driver parameters (the bind processors applied)."""
    rows = []
    for r in batch:
        row = list(_VALUES(r))
        for i, bind in binds:
            row[i] = bind(row[i])
        rows.append(row)
    return rows


def _row(r: OpRecord) -> dict[str, Any]:
    return {name: getattr(r, name) for name in _COLUMNS}


def _record(row: sa.Row[Any]) -> OpRecord:
    m = row._mapping
    return OpRecord(**{name: m[name] for name in _COLUMNS})


class OpMonStore:
    """The ``opmon_records`` table (module docstring)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert_sql, self._binds = _driver_insert(engine.dialect)
        # SQLite file: the plain driver on a thread of its own (module docstring); an in-memory database,
        # which another connection would not see, is written through the engine.
        self._sqlite_args: tuple[str, bool, float] | None = None  # database, uri, timeout
        self._sqlite: sqlite3.Connection | None = None  # the writer thread's connection, opened on first use
        self._executor: ThreadPoolExecutor | None = None
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            dialect = sa.create_engine("sqlite://").dialect  # what pysqlite would pass to sqlite3.connect
            args, kwargs = dialect.create_connect_args(engine.url.set(drivername="sqlite"))
            self._sqlite_args = (str(args[0]), bool(kwargs.get("uri", False)), float(kwargs.get("timeout", 5.0)))
        # PostgreSQL: the writer's connection, kept between batches (dropped on any failure)
        self._conn: AsyncConnection | None = None

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
        if self._sqlite_args is not None:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opmon-writer")
            await asyncio.get_running_loop().run_in_executor(self._executor, self._insert_sqlite, batch)
        elif self._engine.dialect.name == "postgresql":
            await self._insert_postgres(batch)
        else:
            async with transaction(self._engine.begin(), database_error=_database_error) as conn:
                await conn.execute(sa.insert(records), [_row(r) for r in batch])

    def _insert_sqlite(self, batch: Sequence[OpRecord]) -> None:
        # On the writer's thread: bind, insert and commit, one transaction.
        assert self._sqlite_args is not None
        try:
            conn = self._sqlite
            if conn is None:
                database, uri, timeout = self._sqlite_args
                conn = sqlite3.connect(
                    database, uri=uri, timeout=timeout, isolation_level=None, check_same_thread=False
                )
                try:
                    # as the engine's connections (gateway/storage/db.py): the table's file is in WAL mode
                    conn.execute("PRAGMA synchronous=NORMAL")
                    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
                except BaseException:
                    conn.close()
                    raise
                self._sqlite = conn
            rows = _bound(batch, self._binds)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(self._insert_sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            self._close_sqlite()
            raise _database_error(
                DBAPIError.instance(self._insert_sql, None, e, sqlite3.Error, hide_parameters=True)
            ) from e
        except (OSError, ValueError) as e:  # ValueError: a naive timestamp (UtcDateTime refuses it)
            self._close_sqlite()
            raise _database_error(e) from e

    def _close_sqlite(self) -> None:
        conn, self._sqlite = self._sqlite, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    async def _insert_postgres(self, batch: Sequence[OpRecord]) -> None:
        try:
            conn = self._conn
            if conn is None or conn.closed:
                conn = self._conn = await self._engine.connect()
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            await driver.executemany(self._insert_sql, _bound(batch, self._binds))
        except Exception as e:  # asyncpg's errors (PostgresError, InterfaceError), OSError, TimeoutError, ...
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.invalidate()
            raise _database_error(e) from e

    async def close(self) -> None:
        """End the writer's connection and thread (a later insert opens them again)."""
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(executor, self._close_sqlite)
            executor.shutdown(wait=True)  # its thread ends here (a thread left running makes forking unsafe)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close()

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
