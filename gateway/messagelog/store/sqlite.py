"""The SQLite writer of :class:`~gateway.messagelog.store.sql.SqlMessageLogStore` (I/O: its own thread).

On SQLite the writer works through the plain sqlite3 driver on one thread of its own, so that a batch costs one
hand-over between threads rather than one per statement (each hand-over waits for a turn of a busy event loop,
which would otherwise dominate an exchange's latency): one INSERT of the whole batch, in autocommit (or, with
new blobs or usage-index rows, the inserts in one BEGIN IMMEDIATE ... COMMIT), with the
statement SQLAlchemy compiles and its bind processors (``synchronous=FULL``: a log commit survives power
loss). The WAL is copied into the database by another thread and connection, in small passive checkpoints
about every :data:`WAL_CHECKPOINT_BYTES` of records (at a random phase per store, so that two servers started
together do not checkpoint together), never by a commit (docs/messagelog.md section 12).

:class:`SqliteWriter` is a mixin of ``SqlMessageLogStore``: its state is the store's, set by
:meth:`SqliteWriter._init_sqlite_writer`, so a batch goes to the thread with no indirection beyond the
store's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import MessageLogError
from gateway.messagelog.models import blobs, records, usage_index
from gateway.messagelog.store.base import BlockingWriter, PendingRecord, _describe, log
from gateway.messagelog.store.rows import (
    _INDEX_COLUMNS,
    _ROW_COLUMNS,
    _blob_rows,
    _index_rows,
    _max_seq_query,
    _new_blobs,
    _rows,
)

# Record bytes committed between two WAL checkpoints, on average: each interval is drawn from 0.5-1.5 times this,
# the first from 0-1 times, so that two servers started together do not checkpoint (and fsync their database
# files) at the same moment. Small, so that each checkpoint copies little and is over in a few milliseconds: at
# 4 MiB one took 12-16 ms at the median, and the commits made meanwhile were slower (docs/performance.md section 4).
WAL_CHECKPOINT_BYTES = 256 * 2**10
# journal_size_limit: a WAL that grew past this (a reader held back its restart) is cut back to it when it
# restarts, so that one long read does not leave a large file behind.
WAL_SIZE_LIMIT_BYTES = 4 * 2**20
# bytes free on the database's filesystem below which SQLITE_FULL means that the filesystem is full: less than a
# batch of records with its WAL frames needs (a page of 4 KiB per frame, plus its header)
FULL_FREE_BYTES = 1 * 2**20


def _driver_insert(
    dialect: sa.Dialect, table: sa.Table = records, columns: Sequence[str] = _ROW_COLUMNS,
) -> tuple[str, list[tuple[str, Callable[[Any], Any] | None]]]:
    """The batch INSERT into ``table`` (``messagelog_records``, or ``messagelog_usage_index``) compiled for
    ``dialect``, and each positional parameter's name and bind processor (what SQLAlchemy would apply: e.g.
    aware datetimes to SQLite's text form), to run through the driver."""
    compiled = table.insert().compile(dialect=dialect, column_keys=list(columns))
    names = list(compiled.positiontup or ())
    if sorted(names) != sorted(columns):  # pragma: no cover - a dialect with named parameters
        raise MessageLogError(f"unexpected parameters {names} in the message log insert for {dialect.name}")
    return compiled.string, [(n, table.c[n].type.dialect_impl(dialect).bind_processor(dialect)) for n in names]


def _driver_blob_insert(dialect: sa.Dialect) -> str:
    """The insert of one blob row that skips a blob already stored, compiled for ``dialect`` (positional
    parameters origin, sha256, data)."""
    compiled = blobs.insert().prefix_with("OR IGNORE").compile(dialect=dialect,
                                                                column_keys=["origin", "sha256", "data"])
    if list(compiled.positiontup or ()) != ["origin", "sha256", "data"]:  # pragma: no cover - as _driver_insert
        raise MessageLogError(f"unexpected parameters in the message log blob insert for {dialect.name}")
    return compiled.string


class SqliteWriter:
    """The SQLite writer: batches on a thread of its own through the driver, WAL checkpoints on another."""

    _next_seq: dict[str, int]  # the store's: the next sequence number per origin (rule 1)
    _blobs_stored: set[tuple[str, str]]  # the store's: blobs known to be committed

    def _init_sqlite_writer(self, engine: AsyncEngine) -> None:
        """The writer's state; its threads only if ``engine`` is SQLite (else the store writes through
        :class:`~gateway.messagelog.store.postgres.PostgresWriter`).

        Raises:
            MessageLogError: an in-memory SQLite database, which another connection cannot see.
        """
        # SQLite: the writer works through the plain sqlite3 driver on one thread of its own, so that a
        # batch costs one hand-over between threads rather than one per statement (each hand-over waits for
        # a turn of a busy event loop, which would otherwise dominate an exchange's latency).
        self._sqlite_connect_args: tuple[str, bool, float] = ("", False, 5.0)  # database, uri, timeout
        self._sqlite_dir = ""  # the directory of the database file, whose filesystem may fill up
        self._sqlite: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._insert_cache: dict[int, str] = {}
        self._index_insert: tuple[str, list[tuple[str, Callable[[Any], Any] | None]]] = ("", [])
        self._max_variables = 999  # SQLite's smallest default; the connection tells the real limit
        # The WAL checkpoints: their own thread and connection, about every WAL_CHECKPOINT_BYTES of records,
        # at a random phase (the generator is seeded from the OS, per store and per process).
        self._wal_executor: ThreadPoolExecutor | None = None
        self._wal_conn: sqlite3.Connection | None = None
        self._wal_random = random.Random()
        self._wal_bytes = 0
        self._wal_due = WAL_CHECKPOINT_BYTES * self._wal_random.random()
        self._wal_busy = False
        self.sqlite_trace: Callable[[str], None] | None = None
        """Called with every statement the SQLite writer and its WAL checkpoints run, on the thread that runs it
        (instrumentation; set before the first append)."""
        if engine.dialect.name == "sqlite":
            database = engine.url.database
            if not database or database == ":memory:":
                raise MessageLogError("the message log needs an SQLite database file, not an in-memory database")
            # What the pysqlite dialect would pass to sqlite3.connect (a file name, or a URI with uri=True).
            dialect = sa.create_engine("sqlite://").dialect
            args, kwargs = dialect.create_connect_args(engine.url.set(drivername="sqlite"))
            self._sqlite_connect_args = (
                str(args[0]), bool(kwargs.get("uri", False)), float(kwargs.get("timeout", 5.0)),
            )
            self._sqlite_dir = str(Path(database).resolve().parent)
            self._driver_insert = _driver_insert(dialect)
            self._index_insert = _driver_insert(dialect, usage_index, _INDEX_COLUMNS)
            self._blob_insert_sql = _driver_blob_insert(dialect)
            self._max_seq_sql = _max_seq_query(sa.bindparam("origin")).compile(dialect=dialect).string
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="messagelog-writer")
            self._wal_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="messagelog-wal")
        self._sync_closed = False

    def _blocking_writer(self) -> BlockingWriter | None:
        if self._executor is None:
            return None
        return BlockingWriter(self._executor, self._write_batch_sync)

    def _write_batch_sync(self, batch: Sequence[PendingRecord]) -> list[int]:
        # On the writer's thread, holding the GIL as little as possible: every sqlite3 call releases it and
        # must win it back from a busy event loop (docs/performance.md section 4), so a batch is one
        # statement when it can be.
        try:
            conn = self._sqlite
            if conn is None:
                conn = self._sqlite = self._connect_writer()
            # (1) Next sequence number per origin: read once, then kept by this, the only writer of the
            #     origin (the primary key refuses a second writer; any failure forgets what was kept).
            next_seq = self._next_seq
            unknown = [o for o in dict.fromkeys(p.record.origin for p in batch) if o not in next_seq]
            if unknown:
                next_seq = dict(next_seq)
                for origin in unknown:
                    top = conn.execute(self._max_seq_sql, (origin,)).fetchone()[0]
                    next_seq[origin] = 0 if top is None else int(top) + 1
            seqs, rows = _rows(batch, next_seq)
            new_blobs = _new_blobs(batch, self._blobs_stored)
            index_rows = _index_rows(batch, seqs)
            # (2) The rows, flattened in the compiled statement's parameter order (SQLAlchemy's bind
            #     processors applied, so the stored values are what SQLAlchemy would store).
            params = self._driver_insert[1]
            values = [r[n] if bind is None else bind(r[n]) for r in rows for n, bind in params]
            # (3) All of the batch or none of it: one INSERT of every row is one implicit transaction
            #     (autocommit); a batch with blobs not stored yet (the first record of a certificate or OCSP
            #     response), with usage-index rows, or with more parameters than SQLite allows in one
            #     statement, is several statements inside BEGIN IMMEDIATE ... COMMIT: the blobs first, then the
            #     records, then their index rows.
            per_statement = max(1, self._max_variables // len(params))
            if len(rows) <= per_statement and not new_blobs and not index_rows:
                conn.execute(self._insert_sql(len(rows)), values)
            else:
                width = per_statement * len(params)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if new_blobs:
                        conn.executemany(self._blob_insert_sql,
                                         [(b["origin"], b["sha256"], b["data"]) for b in _blob_rows(new_blobs)])
                    for i in range(0, len(values), width):
                        part = values[i:i + width]
                        conn.execute(self._insert_sql(len(part) // len(params)), part)
                    if index_rows:
                        sql, index_params = self._index_insert
                        conn.executemany(sql, [[r[n] if bind is None else bind(r[n]) for n, bind in index_params]
                                               for r in index_rows])
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(Exception):
                        conn.execute("ROLLBACK")
                    raise
        except BaseException as e:
            self._next_seq = {}
            self._blobs_stored.clear()
            conn_, self._sqlite = self._sqlite, None
            if conn_ is not None:
                with contextlib.suppress(Exception):
                    conn_.close()
            if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise self._full(e) from e
            if isinstance(e, sqlite3.Error):  # as SQLAlchemy would report it
                raise sa.exc.DBAPIError.instance(
                    self._driver_insert[0], None, e, sqlite3.Error, hide_parameters=True,
                ) from e
            raise
        self._next_seq = next_seq
        self._blobs_stored.update(new_blobs)
        # (4) The WAL is copied into the database by another thread and connection (see _wal_checkpoint),
        #     not by the commit of whichever batch crosses SQLite's threshold.
        self._wal_bytes += sum(len(p.encoded) for p in batch)
        if self._wal_bytes >= self._wal_due and not self._wal_busy and self._wal_executor is not None:
            self._wal_bytes, self._wal_busy = 0, True
            self._wal_due = WAL_CHECKPOINT_BYTES * self._wal_random.uniform(0.5, 1.5)
            with contextlib.suppress(RuntimeError):  # shut down: the last connection's close checkpoints
                self._wal_executor.submit(self._wal_checkpoint)
        return seqs

    def _full(self, e: BaseException) -> OSError:
        """What SQLITE_FULL ("database or disk is full") was: the filesystem holding the database out of space
        (``ENOSPC``, with the bytes left: the operator's first question), or the database at its own size limit
        (``max_page_count``)."""
        directory = self._sqlite_dir
        try:
            st = os.statvfs(directory)
        except OSError:
            return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (SQLite: {e}; {directory} cannot be examined)")
        free = st.f_bavail * st.f_frsize
        if free < FULL_FREE_BYTES:
            return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {free} bytes free on the filesystem of "
                                         f"{directory} (SQLite: {e})")
        return OSError(errno.EFBIG, f"the message log database reached its size limit with {free} bytes free on "
                                    f"the filesystem of {directory} (SQLite: {e})")

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._sqlite_open()
        try:
            if self.sqlite_trace is not None:
                conn.set_trace_callback(self.sqlite_trace)
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL may lose the last commits on power loss; a log commit must survive
            # it, and group commit keeps the extra fsync cheap.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            # The writer restarts the WAL (from its start, once a checkpoint has copied all of it); that is
            # when a WAL grown past the limit is truncated back.
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            self._max_variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        except BaseException:
            conn.close()
            raise
        return conn

    def _sqlite_open(self) -> sqlite3.Connection:
        database, uri, timeout = self._sqlite_connect_args
        return sqlite3.connect(database, timeout=timeout, isolation_level=None, check_same_thread=False, uri=uri)

    def _insert_sql(self, rows: int) -> str:
        sql = self._insert_cache.get(rows)
        if sql is None:
            head, _, one = self._driver_insert[0].partition(" VALUES ")
            sql = self._insert_cache[rows] = head + " VALUES " + ", ".join([one] * rows)
        return sql

    def _wal_checkpoint(self) -> None:
        # On the WAL thread: copy what the writer committed into the database file (PASSIVE: never waits for
        # the writer or readers; what it cannot copy now, the next run copies). Logged at debug level with
        # SQLite's answer: the WAL's frames (pages) and how many of them are now in the database file.
        try:
            if self._wal_conn is None:
                self._wal_conn = self._sqlite_open()
                if self.sqlite_trace is not None:
                    self._wal_conn.set_trace_callback(self.sqlite_trace)
                self._wal_conn.execute("PRAGMA busy_timeout=5000")
                self._wal_conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            started = time.perf_counter()
            busy, frames, copied = self._wal_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            log.debug("messagelog_wal_checkpoint", wal_frames=frames, checkpointed_frames=copied,
                      busy=bool(busy), ms=round((time.perf_counter() - started) * 1000, 2))
        except Exception as e:
            log.warning("messagelog_wal_checkpoint_failed", error=_describe(e))
            conn, self._wal_conn = self._wal_conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        finally:
            self._wal_busy = False

    def _close_sync(self) -> None:
        if self._sqlite is not None:
            with contextlib.suppress(Exception):
                self._sqlite.close()
            self._sqlite = None

    def _close_wal(self) -> None:
        if self._wal_conn is not None:
            with contextlib.suppress(Exception):
                self._wal_conn.close()
            self._wal_conn = None

    async def _close_sqlite_writer(self) -> None:
        if self._executor is not None and not self._sync_closed:
            self._sync_closed = True
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._close_sync)
            self._executor.shutdown(wait=True)
            if self._wal_executor is not None:
                await loop.run_in_executor(self._wal_executor, self._close_wal)
                self._wal_executor.shutdown(wait=True)


__all__ = ["FULL_FREE_BYTES", "WAL_CHECKPOINT_BYTES", "WAL_SIZE_LIMIT_BYTES", "SqliteWriter"]
