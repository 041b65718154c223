"""Message-log storage with group commit (I/O).

DESIGN.md section 5: a record is durable **before** the exchange proceeds, and durability must not cost
throughput. :meth:`MessageLogStore.append` therefore queues the record and waits; one writer task per store
takes everything queued (up to ``max_batch`` records), assigns each record the next sequence number of its
origin, writes the whole batch in **one transaction**, and only after the commit resolves each caller. While
one transaction is in flight, new records queue up for the next, so under load one commit (one fsync) serves
many exchanges.

Rules the writer keeps:

1. Sequence numbers are assigned inside the writer, per origin, dense and gap-free from 0: the next number
   is one past the highest committed one, read in the same transaction. A failed batch commits nothing, so
   it leaves no gap.
2. If the batch cannot be committed, every caller in it gets :class:`~gateway.errors.MessageLogError`
   (``Server.ClientProxy.LoggingFailed`` or ``Server.ServerProxy.LoggingFailed`` by the record's side) and
   the transaction is rolled back: nothing of the batch is stored. The writer carries on with the next batch.
3. One writer per origin: two processes must not log under one origin (the primary key refuses it, and
   the batch fails closed).
4. ``close()`` refuses new records, lets the writer commit everything queued, then returns.

:class:`SqlMessageLogStore` is the real store (SQLite, with ``synchronous=FULL`` for log commits, or
PostgreSQL); :class:`MemoryMessageLogStore` is the test double, with the same writer and a switch to fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import GatewayError, MessageLogError, RequestError, TrustError
from gateway.messagelog import merkle
from gateway.messagelog.models import VERSION_TABLE, checkpoints, records, retention
from gateway.messagelog.record import LogRecord, decode, leaf_hash
from gateway.storage.db import migrate

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_MAX_BODY_BYTES = 10 * 2**20  # bytes; X-Road's max-loggable-message-body-size
DEFAULT_MAX_BATCH = 256  # records per transaction; bounds one commit's size and latency
THREAD_ENCODE_BYTES = 64 * 2**10  # bytes of body above which encoding runs in a thread, off the event loop
MAX_READ = 10_000  # records per read() call
MAX_LEAF_READ = 100_000  # leaf hashes per leaf_hashes() call (3.2 MB)
WAL_CHECKPOINT_BYTES = 4 * 2**20  # record bytes committed between two SQLite WAL checkpoints

log = structlog.get_logger(__name__)
_T = TypeVar("_T")


class Appended(NamedTuple):
    """Where a committed record sits in its origin's log: index and RFC 9162 leaf hash."""

    seq: int
    leaf_hash: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredRecord:
    origin: str
    seq: int
    encoded: bytes
    leaf_hash: bytes

    def decode(self) -> LogRecord:
        """Raises: TrustError: the stored bytes are not a valid record (see :func:`record.decode`)."""
        return decode(self.encoded)


@dataclass(slots=True)
class WriterStats:
    """Counters of the writer (mutable; read by metrics and tests)."""

    batches: int = 0  # committed transactions
    records: int = 0  # committed records
    failed_batches: int = 0
    largest_batch: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredCheckpoint:
    """A signed checkpoint as stored, with its RFC 3161 timestamp once it has one (docs/messagelog.md)."""

    origin: str  # the log origin of the records (the note's origin line adds checkpoint.ORIGIN_SUFFIX)
    size: int
    root_hash: bytes
    note: bytes = field(repr=False)  # the signed note, exactly as signed; the timestamp covers SHA-256 of it
    signing_cert: bytes = field(repr=False)  # DER
    frontier: tuple[bytes, ...] = field(repr=False)  # compact range of the tree at size (merkle.MerkleTree)
    created: datetime
    timestamp_token: bytes | None = field(default=None, repr=False)
    timestamp_time: datetime | None = None  # genTime of the token
    tsa_name: str | None = None
    tsa_cert: bytes | None = field(default=None, repr=False)  # DER

    @property
    def stamped(self) -> bool:
        return self.timestamp_token is not None


@dataclass(slots=True, kw_only=True)
class PendingRecord:
    record: LogRecord
    encoded: bytes
    leaf_hash: bytes
    future: asyncio.Future[Appended] = field(repr=False)


_STOP = object()


@dataclass(frozen=True, slots=True)
class BlockingWriter:
    """A store's blocking batch writer and the one-thread executor it runs on (see ``_blocking_writer``)."""

    executor: Executor
    write: Callable[[Sequence[PendingRecord]], list[int]]


def _logging_failed(record: LogRecord, message: str) -> MessageLogError:
    side = "ClientProxy" if record.side == "client" else "ServerProxy"
    return MessageLogError(message, code=f"Server.{side}.LoggingFailed")


class MessageLogStore(ABC):
    """The message-log seam: group-committed appends, reads by origin and sequence number.

    Subclasses implement :meth:`_write_batch` (one atomic transaction) and the reads; this base class runs
    the writer and turns every foreign exception into :class:`MessageLogError`.
    """

    def __init__(
        self, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self.stats = WriterStats()
        self._queue: asyncio.Queue[PendingRecord | object] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        # The blocking writer's state (see _blocking_writer): records waiting for the next batch, the batch
        # in the thread, and close()'s wait for both to drain.
        self._blocking: BlockingWriter | None = None
        self._blocking_known = False
        self._pending: list[PendingRecord] = []
        self._in_flight: list[PendingRecord] | None = None
        self._kicked = False
        self._drained: asyncio.Future[None] | None = None

    async def append(self, record: LogRecord) -> Appended:
        """Log ``record`` and return once it is committed.

        Raises:
            MessageLogError: the store is closed, the body is larger than ``max_body_bytes``, or the batch
                holding the record could not be committed (nothing of it is stored).
        """
        # (1) Refuse early what can never be written.
        if self._closed:
            raise _logging_failed(record, "the message log is closed")
        if record.loggable_size > self.max_body_bytes:
            raise _logging_failed(
                record,
                f"message body of {record.loggable_size} bytes exceeds the loggable maximum of "
                f"{self.max_body_bytes} bytes",
            )
        # (2) Encode and hash in the caller (in a thread for large bodies), so the writer only writes.
        if record.loggable_size > THREAD_ENCODE_BYTES:
            encoded, leaf = await asyncio.to_thread(_encode, record)
        else:
            encoded, leaf = _encode(record)
        # (3) Queue for the writer and wait for its commit.
        loop = asyncio.get_running_loop()
        pending = PendingRecord(record=record, encoded=encoded, leaf_hash=leaf, future=loop.create_future())
        if not self._blocking_known:
            self._blocking, self._blocking_known = self._blocking_writer(), True
        if self._blocking is not None:
            self._pending.append(pending)
            if self._in_flight is None and not self._kicked:
                # The writer is idle: the batch starts on the next turn of the loop, with whatever else is
                # appended in this one (as a writer task woken by the queue would take it).
                self._kicked = True
                loop.call_soon(self._kick, loop, self._blocking)
            return await pending.future
        if self._writer is None:
            self._writer = loop.create_task(self._run(), name=f"{type(self).__name__}-writer")
        elif self._writer.done():
            raise _logging_failed(record, "the message log writer has stopped")
        self._queue.put_nowait(pending)
        return await pending.future

    async def close(self) -> None:
        """Refuse new records, commit everything queued, stop the writer. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._in_flight is not None or self._pending:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self._writer is not None:
            self._queue.put_nowait(_STOP)
            await self._writer

    def _blocking_writer(self) -> BlockingWriter | None:
        """A blocking :meth:`_write_batch` and the one-thread executor to run it on, or ``None``.

        With one, a batch goes to the thread from a callback that :meth:`append` schedules when the writer
        is idle, or straight from the previous batch's completion callback, and that callback resolves the
        callers: three turns of the event loop per record instead of four through a writer task (on a busy
        loop each turn waits for everything else that is ready). Batches, group commit and rules 1-4 are
        the same.
        """
        return None

    def _kick(self, loop: asyncio.AbstractEventLoop, writer: BlockingWriter) -> None:
        self._kicked = False
        if self._in_flight is None and self._pending:
            self._submit(loop, writer)

    def _submit(self, loop: asyncio.AbstractEventLoop, writer: BlockingWriter) -> None:
        # On the event loop: the next batch, in queue order, to the writer's thread.
        batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        self._in_flight = batch
        try:
            writer.executor.submit(self._write_in_thread, loop, writer, batch)
        except RuntimeError as e:  # the executor has shut down
            self._batch_done(loop, writer, batch, None, e)

    def _write_in_thread(
        self, loop: asyncio.AbstractEventLoop, writer: BlockingWriter, batch: list[PendingRecord],
    ) -> None:
        try:
            seqs, error = writer.write(batch), None
        except BaseException as e:  # any failure of the backend fails the batch closed
            seqs, error = None, e
        with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody waits any more
            loop.call_soon_threadsafe(self._batch_done, loop, writer, batch, seqs, error)

    def _batch_done(
        self, loop: asyncio.AbstractEventLoop, writer: BlockingWriter, batch: list[PendingRecord],
        seqs: list[int] | None, error: BaseException | None,
    ) -> None:
        # On the event loop: settle the callers, then start the next batch at once.
        self._in_flight = None
        self._settle(batch, seqs, error)
        if self._pending:
            self._submit(loop, writer)
        elif self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def _run(self) -> None:
        batch: list[PendingRecord] = []
        try:
            while True:
                item = await self._queue.get()
                if item is _STOP:
                    return
                assert isinstance(item, PendingRecord)
                batch = [item]
                stop = False
                while len(batch) < self.max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if nxt is _STOP:
                        stop = True
                        break
                    assert isinstance(nxt, PendingRecord)
                    batch.append(nxt)
                await self._commit(batch)
                batch = []
                if stop:
                    return
        finally:
            # Cancelled (event loop shutting down): nobody may go on believing an uncommitted record is safe.
            leftovers = list(batch)
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if isinstance(item, PendingRecord):
                    leftovers.append(item)
            for p in leftovers:
                if not p.future.done():
                    p.future.set_exception(_logging_failed(p.record, "the message log writer stopped"))

    async def _commit(self, batch: list[PendingRecord]) -> None:
        try:
            seqs = await self._write_batch(batch)
        except Exception as e:  # any failure of the backend fails the batch closed
            self._settle(batch, None, e)
            return
        self._settle(batch, seqs, None)

    def _settle(self, batch: list[PendingRecord], seqs: list[int] | None, error: BaseException | None) -> None:
        if error is not None:
            self.stats.failed_batches += 1
            log.error("messagelog_commit_failed", records=len(batch), error=repr(error))
            for p in batch:
                if not p.future.done():
                    err = _logging_failed(p.record, f"message log write failed: {_describe(error)}")
                    err.__cause__ = error
                    p.future.set_exception(err)
            return
        assert seqs is not None
        self.stats.batches += 1
        self.stats.records += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for p, seq in zip(batch, seqs, strict=True):
            if not p.future.done():  # a caller cancelled while waiting: its record is still logged
                p.future.set_result(Appended(seq, p.leaf_hash))

    async def size(self, origin: str) -> int:
        """Number of committed records of ``origin`` (= next sequence number).

        Raises:
            MessageLogError: the backend failed.
        """
        try:
            return await self._size(origin)
        except GatewayError:
            raise
        except Exception as e:
            raise MessageLogError(f"message log read failed: {_describe(e)}") from e

    async def read(self, origin: str, *, start: int = 0, limit: int = 1000) -> list[StoredRecord]:
        """Committed records of ``origin`` with ``seq >= start``, in order, at most ``limit`` (<= 10 000).

        Raises:
            MessageLogError: the backend failed, or the arguments are out of range.
        """
        if start < 0 or not 0 < limit <= MAX_READ:
            raise MessageLogError(f"read range start={start} limit={limit} is out of bounds")
        try:
            return await self._read(origin, start, limit)
        except GatewayError:
            raise
        except Exception as e:
            raise MessageLogError(f"message log read failed: {_describe(e)}") from e

    # ---- checkpoints, timestamps, leaf hashes, proofs and retention (docs/messagelog.md sections 7-10) ------

    async def leaf_hashes(self, origin: str, start: int, end: int) -> list[bytes]:
        """Leaf hashes of ``origin``'s records ``start <= seq < end`` (pruned records included), in order.

        Raises:
            MessageLogError: the range is out of bounds, longer than MAX_LEAF_READ, not all committed, or the
                backend failed.
        """
        if not 0 <= start <= end or end - start > MAX_LEAF_READ:
            raise MessageLogError(f"leaf hash range [{start}, {end}) is out of bounds")
        out = await self._guard(self._leaf_hashes(origin, start, end))
        if len(out) != end - start:
            size = await self.size(origin)
            raise MessageLogError(f"log {origin} has only {size} records; leaf hashes up to {end} were asked for")
        return out

    async def range_root(self, origin: str, start: int, end: int) -> bytes:
        """The RFC 9162 root of the leaves ``[start, end)``, reading them in bounded chunks.

        Raises:
            MessageLogError: as :meth:`leaf_hashes`.
        """
        tree = merkle.MerkleTree()
        for chunk_start in range(start, end, MAX_LEAF_READ):
            tree.extend(await self.leaf_hashes(origin, chunk_start, min(end, chunk_start + MAX_LEAF_READ)))
        return tree.root()

    async def inclusion_proof(self, origin: str, seq: int, size: int) -> list[bytes]:
        """RFC 9162 inclusion proof of record ``seq`` in ``origin``'s tree of ``size`` leaves.

        Raises:
            TrustError: ``seq`` is not inside the tree.
            MessageLogError: the log has fewer than ``size`` records, or the backend failed.
        """
        return [await self.range_root(origin, a, b) for a, b in merkle.inclusion_ranges(seq, size)]

    async def consistency_proof(self, origin: str, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof between ``origin``'s trees of ``old_size`` and ``new_size`` leaves.

        Raises:
            TrustError: the sizes are out of order.
            MessageLogError: the log has fewer than ``new_size`` records, or the backend failed.
        """
        return [await self.range_root(origin, a, b) for a, b in merkle.consistency_ranges(old_size, new_size)]

    async def add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Store a new signed checkpoint (unstamped or stamped).

        Raises:
            MessageLogError: a checkpoint of that size exists already, or the backend failed.
        """
        await self._guard(self._add_checkpoint(checkpoint))

    async def set_timestamp(
        self, origin: str, size: int, *, token: bytes, gen_time: datetime, tsa_name: str, tsa_cert: bytes,
    ) -> None:
        """Attach an RFC 3161 token to the checkpoint of ``size`` (the caller has verified it).

        Raises:
            MessageLogError: no such checkpoint, or the backend failed.
        """
        await self._guard(self._set_timestamp(origin, size, token, gen_time, tsa_name, tsa_cert))

    async def checkpoints(
        self, origin: str, *, min_size: int = 0, limit: int = 1000, unstamped_only: bool = False,
    ) -> list[StoredCheckpoint]:
        """Checkpoints of ``origin`` with ``size >= min_size``, smallest first, at most ``limit``.

        Raises:
            MessageLogError: the backend failed.
        """
        return await self._guard(self._checkpoints(origin, min_size, limit, unstamped_only, newest=False))

    async def latest_checkpoint(self, origin: str, *, stamped_only: bool = False) -> StoredCheckpoint | None:
        """The largest checkpoint of ``origin`` (only among timestamped ones if ``stamped_only``).

        Raises:
            MessageLogError: the backend failed.
        """
        found = await self._guard(self._checkpoints(origin, 0, 1, False, newest=True, stamped_only=stamped_only))
        return found[0] if found else None

    async def checkpoint(self, origin: str, size: int) -> StoredCheckpoint | None:
        """The checkpoint of ``origin`` at exactly ``size``, if there is one.

        Raises:
            MessageLogError: the backend failed.
        """
        found = await self.checkpoints(origin, min_size=size, limit=1)
        return found[0] if found and found[0].size == size else None

    async def pruned_before(self, origin: str) -> int:
        """Records of ``origin`` below this sequence number have had their bodies removed (0: none).

        Raises:
            MessageLogError: the backend failed.
        """
        return await self._guard(self._pruned_before(origin))

    async def prune(self, origin: str, before_seq: int, *, now: datetime) -> int:
        """Remove the stored records ``seq < before_seq`` of ``origin``, keeping their leaf hashes.

        Only a range covered by a **timestamped** checkpoint may be pruned, so that the exported archive
        and the online log meet at a signed, timestamped tree head. Export the range first
        (``gateway log export``); this method cannot know whether that happened. Returns the number of
        records whose bodies were removed.

        Raises:
            RequestError: ``before_seq`` is beyond the latest timestamped checkpoint.
            MessageLogError: the backend failed.
        """
        if before_seq < 0:
            raise RequestError(f"prune: sequence number {before_seq} is negative")
        stamped = await self.latest_checkpoint(origin, stamped_only=True)
        covered = 0 if stamped is None else stamped.size
        if before_seq > covered:
            raise RequestError(
                f"prune: records up to {before_seq} of {origin} are not all covered by a timestamped checkpoint "
                f"(the latest covers {covered})",
                hint="wait for the next checkpoint and its timestamp, or prune less",
            )
        return await self._guard(self._prune(origin, before_seq, now))

    async def _guard(self, coro: Coroutine[object, object, _T]) -> _T:
        try:
            return await coro
        except GatewayError:
            raise
        except Exception as e:
            raise MessageLogError(f"message log access failed: {_describe(e)}") from e

    @abstractmethod
    async def _leaf_hashes(self, origin: str, start: int, end: int) -> list[bytes]: ...

    @abstractmethod
    async def _add_checkpoint(self, checkpoint: StoredCheckpoint) -> None: ...

    @abstractmethod
    async def _set_timestamp(
        self, origin: str, size: int, token: bytes, gen_time: datetime, tsa_name: str, tsa_cert: bytes,
    ) -> None: ...

    @abstractmethod
    async def _checkpoints(
        self, origin: str, min_size: int, limit: int, unstamped_only: bool, *, newest: bool,
        stamped_only: bool = False,
    ) -> list[StoredCheckpoint]: ...

    @abstractmethod
    async def _pruned_before(self, origin: str) -> int: ...

    @abstractmethod
    async def _prune(self, origin: str, before_seq: int, now: datetime) -> int: ...

    @abstractmethod
    async def _write_batch(self, batch: Sequence[PendingRecord]) -> list[int]:
        """Store the whole batch atomically; return each record's sequence number, in batch order."""

    @abstractmethod
    async def _size(self, origin: str) -> int: ...

    @abstractmethod
    async def _read(self, origin: str, start: int, limit: int) -> list[StoredRecord]: ...


def _encode(record: LogRecord) -> tuple[bytes, bytes]:
    encoded = record.encode()
    return encoded, leaf_hash(encoded)


_ROW_COLUMNS = (
    "origin", "seq", "created", "message_id", "request_id", "kind", "side", "client", "service", "record",
    "leaf_hash",
)


def _driver_insert(dialect: sa.Dialect) -> tuple[str, list[tuple[str, Callable[[Any], Any] | None]]]:
    """The batch INSERT compiled for ``dialect``, and each positional parameter's name and bind processor
    (what SQLAlchemy would apply: e.g. aware datetimes to SQLite's text form), to run through the driver."""
    compiled = records.insert().compile(dialect=dialect, column_keys=list(_ROW_COLUMNS))
    names = list(compiled.positiontup or ())
    if sorted(names) != sorted(_ROW_COLUMNS):  # pragma: no cover - a dialect with named parameters
        raise MessageLogError(f"unexpected parameters {names} in the message log insert for {dialect.name}")
    return compiled.string, [(n, records.c[n].type.dialect_impl(dialect).bind_processor(dialect)) for n in names]


def _max_seq_query(origin: str | sa.BindParameter[str]) -> sa.Select[Any]:
    """The highest sequence number committed for ``origin`` (NULL: none yet)."""
    return sa.select(sa.func.max(records.c.seq)).where(records.c.origin == origin)


def _describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


async def migrate_messagelog(engine: AsyncEngine) -> None:
    """Bring the message-log schema up to date (its own Alembic version table)."""
    await migrate(engine, MIGRATIONS, VERSION_TABLE)


class SqlMessageLogStore(MessageLogStore):
    """The message log in SQLite or PostgreSQL (table ``messagelog_records``); the engine is the caller's."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        super().__init__(max_body_bytes=max_body_bytes, max_batch=max_batch)
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._next_seq: dict[str, int] = {}
        # SQLite: the writer works through the plain sqlite3 driver on one thread of its own, so that a
        # batch costs one hand-over between threads rather than one per statement (each hand-over waits for
        # a turn of a busy event loop, which would otherwise dominate an exchange's latency).
        self._sqlite_connect_args: tuple[str, bool, float] = ("", False, 5.0)  # database, uri, timeout
        self._sqlite: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._insert_cache: dict[int, str] = {}
        self._max_variables = 999  # SQLite's smallest default; the connection tells the real limit
        # The WAL checkpoints: their own thread and connection, after every WAL_CHECKPOINT_BYTES of records.
        self._wal_executor: ThreadPoolExecutor | None = None
        self._wal_conn: sqlite3.Connection | None = None
        self._wal_bytes = 0
        self._wal_busy = False
        self.sqlite_trace: Callable[[str], None] | None = None
        """Called with every statement the SQLite writer runs (instrumentation; set before the first append)."""
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
            self._driver_insert = _driver_insert(dialect)
            self._max_seq_sql = _max_seq_query(sa.bindparam("origin")).compile(dialect=dialect).string
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="messagelog-writer")
            self._wal_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="messagelog-wal")
        self._sync_closed = False

    @property
    def engine(self) -> AsyncEngine:
        """The engine this store reads through (for queries it does not offer, e.g. records by time)."""
        return self._engine

    def _blocking_writer(self) -> BlockingWriter | None:
        if self._executor is None:
            return None
        return BlockingWriter(self._executor, self._write_batch_sync)

    @property
    def writer_engine(self) -> sa.Engine:
        """The engine whose connection commits the batches on PostgreSQL (for instrumentation; the SQLite writer
        uses the driver directly: see ``sqlite_trace``)."""
        return self._engine.sync_engine

    @staticmethod
    def _rows(batch: Sequence[PendingRecord], next_seq: dict[str, int]) -> tuple[list[int], list[dict[str, object]]]:
        # (2) Number the batch densely, in queue order.
        seqs: list[int] = []
        rows: list[dict[str, object]] = []
        for p in batch:
            r = p.record
            seq = next_seq[r.origin]
            next_seq[r.origin] = seq + 1
            seqs.append(seq)
            rows.append({
                "origin": r.origin, "seq": seq, "created": r.created, "message_id": r.message_id,
                "request_id": r.request_id, "kind": r.kind, "side": r.side, "client": str(r.client),
                "service": str(r.service), "record": p.encoded, "leaf_hash": p.leaf_hash,
            })
        return seqs, rows

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
            seqs, rows = self._rows(batch, next_seq)
            # (2) The rows, flattened in the compiled statement's parameter order (SQLAlchemy's bind
            #     processors applied, so the stored values are what SQLAlchemy would store).
            params = self._driver_insert[1]
            values = [r[n] if bind is None else bind(r[n]) for r in rows for n, bind in params]
            # (3) All of the batch or none of it: one INSERT of every row is one implicit transaction
            #     (autocommit); a batch with more parameters than SQLite allows in one statement is split
            #     into several inside BEGIN IMMEDIATE ... COMMIT.
            per_statement = max(1, self._max_variables // len(params))
            if len(rows) <= per_statement:
                conn.execute(self._insert_sql(len(rows)), values)
            else:
                width = per_statement * len(params)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for i in range(0, len(values), width):
                        part = values[i:i + width]
                        conn.execute(self._insert_sql(len(part) // len(params)), part)
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(Exception):
                        conn.execute("ROLLBACK")
                    raise
        except BaseException as e:
            self._next_seq = {}
            conn_, self._sqlite = self._sqlite, None
            if conn_ is not None:
                with contextlib.suppress(Exception):
                    conn_.close()
            if isinstance(e, sqlite3.Error):  # as SQLAlchemy would report it
                raise sa.exc.DBAPIError.instance(
                    self._driver_insert[0], None, e, sqlite3.Error, hide_parameters=True,
                ) from e
            raise
        self._next_seq = next_seq
        # (4) The WAL is copied into the database by another thread and connection (see _wal_checkpoint),
        #     not by the commit of whichever batch crosses SQLite's threshold.
        self._wal_bytes += sum(len(p.encoded) for p in batch)
        if self._wal_bytes >= WAL_CHECKPOINT_BYTES and not self._wal_busy and self._wal_executor is not None:
            self._wal_bytes, self._wal_busy = 0, True
            with contextlib.suppress(RuntimeError):  # shut down: the last connection's close checkpoints
                self._wal_executor.submit(self._wal_checkpoint)
        return seqs

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
        # the writer or readers; what it cannot copy now, the next run copies).
        try:
            if self._wal_conn is None:
                self._wal_conn = self._sqlite_open()
                self._wal_conn.execute("PRAGMA busy_timeout=5000")
            self._wal_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception as e:
            log.warning("messagelog_wal_checkpoint_failed", error=_describe(e))
            conn, self._wal_conn = self._wal_conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        finally:
            self._wal_busy = False

    async def _writer_connection(self) -> AsyncConnection:
        # The writer keeps one connection: no pool checkout and no sequence query per batch.
        if self._conn is None or self._conn.closed:
            self._conn = await self._engine.connect()
        return self._conn

    async def _drop_writer_connection(self) -> None:
        self._next_seq.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _write_batch(self, batch: Sequence[PendingRecord]) -> list[int]:
        if self._executor is not None:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._write_batch_sync, batch)
        try:
            conn = await self._writer_connection()
            async with conn.begin():
                next_seq = dict(self._next_seq)  # (1) as in _write_batch_sync
                for origin in dict.fromkeys(p.record.origin for p in batch):
                    if origin not in next_seq:
                        top = await conn.scalar(_max_seq_query(origin))
                        next_seq[origin] = 0 if top is None else int(top) + 1
                seqs, rows = self._rows(batch, next_seq)
                await conn.execute(records.insert(), rows)
        except BaseException:
            await self._drop_writer_connection()
            raise
        self._next_seq = next_seq
        return seqs

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

    async def close(self) -> None:
        await super().close()
        await self._drop_writer_connection()
        if self._executor is not None and not self._sync_closed:
            self._sync_closed = True
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._close_sync)
            self._executor.shutdown(wait=True)
            if self._wal_executor is not None:
                await loop.run_in_executor(self._wal_executor, self._close_wal)
                self._wal_executor.shutdown(wait=True)

    async def _size(self, origin: str) -> int:
        async with self._engine.connect() as conn:
            top = await conn.scalar(_max_seq_query(origin))
        return 0 if top is None else int(top) + 1

    async def _read(self, origin: str, start: int, limit: int) -> list[StoredRecord]:
        query = (
            sa.select(records.c.seq, records.c.record, records.c.leaf_hash)
            .where(records.c.origin == origin, records.c.seq >= start, records.c.record.is_not(None))
            .order_by(records.c.seq)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            result = await conn.execute(query)
            return [
                StoredRecord(origin=origin, seq=int(seq), encoded=bytes(data), leaf_hash=bytes(leaf))
                for seq, data, leaf in result
            ]

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

    async def _pruned_before(self, origin: str) -> int:
        async with self._engine.connect() as conn:
            value = await conn.scalar(sa.select(retention.c.pruned_before).where(retention.c.origin == origin))
        return 0 if value is None else int(value)

    async def _prune(self, origin: str, before_seq: int, now: datetime) -> int:
        async with self._engine.begin() as conn:
            current = await conn.scalar(sa.select(retention.c.pruned_before).where(retention.c.origin == origin))
            if current is not None and int(current) >= before_seq:
                return 0
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


class MemoryMessageLogStore(MessageLogStore):
    """In-memory test double with the real writer; set ``fail_with`` to make the next commits fail."""

    def __init__(
        self, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        super().__init__(max_body_bytes=max_body_bytes, max_batch=max_batch)
        self._logs: dict[str, list[StoredRecord]] = {}
        self._cps: dict[str, dict[int, StoredCheckpoint]] = {}
        self._pruned: dict[str, int] = {}
        self.fail_with: Exception | None = None

    async def _write_batch(self, batch: Sequence[PendingRecord]) -> list[int]:
        await asyncio.sleep(0)  # a real commit yields to the event loop; let the next batch queue up
        if self.fail_with is not None:
            raise self.fail_with
        staged: dict[str, list[StoredRecord]] = {}
        seqs = []
        for p in batch:
            origin = p.record.origin
            log_ = staged.setdefault(origin, [])
            seq = len(self._logs.get(origin, ())) + len(log_)
            log_.append(StoredRecord(origin=origin, seq=seq, encoded=p.encoded, leaf_hash=p.leaf_hash))
            seqs.append(seq)
        for origin, new in staged.items():
            self._logs.setdefault(origin, []).extend(new)
        return seqs

    async def _size(self, origin: str) -> int:
        return len(self._logs.get(origin, ()))

    async def _read(self, origin: str, start: int, limit: int) -> list[StoredRecord]:
        start = max(start, self._pruned.get(origin, 0))
        return list(self._logs.get(origin, ())[start:start + limit])

    async def _leaf_hashes(self, origin: str, start: int, end: int) -> list[bytes]:
        return [s.leaf_hash for s in self._logs.get(origin, ())[start:end]]

    async def _add_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        mine = self._cps.setdefault(checkpoint.origin, {})
        if checkpoint.size in mine:
            raise MessageLogError(f"a checkpoint of {checkpoint.origin} at size {checkpoint.size} exists")
        mine[checkpoint.size] = checkpoint

    async def _set_timestamp(
        self, origin: str, size: int, token: bytes, gen_time: datetime, tsa_name: str, tsa_cert: bytes,
    ) -> None:
        mine = self._cps.get(origin, {})
        if size not in mine:
            raise MessageLogError(f"no checkpoint of {origin} at size {size} to timestamp")
        mine[size] = dataclasses.replace(mine[size], timestamp_token=token, timestamp_time=gen_time,
                                         tsa_name=tsa_name, tsa_cert=tsa_cert)

    async def _checkpoints(
        self, origin: str, min_size: int, limit: int, unstamped_only: bool, *, newest: bool,
        stamped_only: bool = False,
    ) -> list[StoredCheckpoint]:
        found = [c for size, c in sorted(self._cps.get(origin, {}).items(), reverse=newest)
                 if size >= min_size and not (unstamped_only and c.stamped) and not (stamped_only and not c.stamped)]
        return found[:limit]

    async def _pruned_before(self, origin: str) -> int:
        return self._pruned.get(origin, 0)

    async def _prune(self, origin: str, before_seq: int, now: datetime) -> int:
        current = self._pruned.get(origin, 0)
        if current >= before_seq:
            return 0
        self._pruned[origin] = before_seq
        return min(before_seq, len(self._logs.get(origin, ()))) - current

    def records(self, origin: str) -> list[LogRecord]:
        """Every committed, unpruned record of ``origin``, decoded (for assertions in tests)."""
        return [s.decode() for s in self._logs.get(origin, ())[self._pruned.get(origin, 0):]]


__all__ = [
    "Appended",
    "MemoryMessageLogStore",
    "MessageLogStore",
    "SqlMessageLogStore",
    "StoredCheckpoint",
    "StoredRecord",
    "WriterStats",
    "migrate_messagelog",
]
