"""The message-log store's seam and its group commit: :class:`MessageLogStore` and what it stores (I/O: the
event loop, and the writer's thread for a store that has one).

Rules 1-4 of :mod:`gateway.messagelog.store` are kept here for every backend: :meth:`MessageLogStore.append`
encodes and hashes the record in the caller, queues it, and waits for the commit of its batch; the writer
(a task, or a thread of the backend's own: :meth:`MessageLogStore._blocking_writer`) takes what is queued, has
the backend write it in one transaction (:meth:`MessageLogStore._write_batch`), and resolves every caller of
the batch with its sequence number, or fails them all closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol, TypeVar

import structlog

from gateway.errors import CLIENT_PROXY, SERVER_PROXY, GatewayError, MessageLogError, RequestError, TrustError
from gateway.messagelog import merkle
from gateway.messagelog.merkle import leaf_hash
from gateway.messagelog.record import BODY_HEAD, LogRecord, StreamedEncoding, blob_refs, decode
from gateway.trust.cosignature import Cosignature

DEFAULT_MAX_BODY_BYTES = 10 * 2**20  # bytes; X-Road's max-loggable-message-body-size
DEFAULT_MAX_BATCH = 256  # records per transaction; bounds one commit's size and latency
THREAD_ENCODE_BYTES = 64 * 2**10  # bytes of body above which encoding runs in a thread, off the event loop
MAX_READ = 10_000  # records per read() call
MAX_LEAF_READ = 100_000  # leaf hashes per leaf_hashes() call (3.2 MB)
BODY_CHUNK_BYTES = 1 * 2**20  # bytes per stored chunk of a body stored apart (append_body_apart)
BLOB_CACHE = 4096  # blobs a store keeps in memory for its reads (content-addressed: never stale)

log = structlog.get_logger("gateway.messagelog.store")  # the name it had as one module, for every part of it
_T = TypeVar("_T")


Outcome = int | GatewayError  # what a record of a written batch gets: its sequence number, or its own refusal
# Rows of ``messagelog_usage_index`` that belong to a record and commit in its batch's transaction: given the
# record's sequence number (assigned in the batch), the rows, each naming the record's origin and that number.
IndexRows = Callable[[int], Sequence[Mapping[str, Any]]]


class Appended(NamedTuple):
    """Where a committed record sits in its origin's log: index and RFC 9162 leaf hash."""

    seq: int
    leaf_hash: bytes


_NO_BLOBS: Mapping[str, bytes] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredRecord:
    origin: str
    seq: int
    encoded: bytes
    leaf_hash: bytes
    # the log's blobs that the record names (it may hold others: one mapping serves a page of records)
    blobs: Mapping[str, bytes] = field(default_factory=lambda: _NO_BLOBS, repr=False, compare=False)
    # A body stored apart (MessageLogStore.append_body_apart): its id and size. ``encoded`` is then the record's
    # encoding with "body":null, and ``leaf_hash`` that of its encoding with the body
    # (MessageLogStore.encoded_chunks gives that encoding, checked against the leaf hash).
    body_ref: str | None = None
    body_size: int | None = None

    def decode(self) -> LogRecord:
        """The record; one whose body is stored apart comes without it (``body=None``: read it with
        :meth:`MessageLogStore.body_chunks`).

        Raises: TrustError: the stored bytes are not a valid record, or a blob it names is missing or
        altered (see :func:`record.decode`)."""
        return decode(self.encoded, self.blobs)


@dataclass(slots=True)
class WriterStats:
    """Counters of the writer (mutable; read by metrics and tests)."""

    batches: int = 0  # committed transactions
    records: int = 0  # committed records
    failed_batches: int = 0
    largest_batch: int = 0


class CommitObserver(Protocol):
    """Where the writer reports its commits (:class:`gateway.ops.metrics.ServerMetrics` fits)."""

    def commit_done(self, records: int, seconds: float, *, failed: bool) -> None: ...

    def record_waited(self, side: str, seconds: float) -> None: ...


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


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredCosignature:
    """A witness's cosignature of the checkpoint of ``origin`` at ``size`` (docs/witness.md section 4)."""

    origin: str  # the log origin, as StoredCheckpoint.origin
    size: int
    cosignature: Cosignature


@dataclass(slots=True, kw_only=True)
class PendingRecord:
    record: LogRecord
    encoded: bytes
    leaf_hash: bytes
    future: asyncio.Future[Appended] = field(repr=False)
    blobs: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)  # (name, DER) the record names
    body_ref: str | None = None  # a body stored apart (committed already): its id
    body_size: int | None = None
    queued_at: float = field(default_factory=time.perf_counter, repr=False)  # for the wait metric
    index_rows: IndexRows | None = field(default=None, repr=False)  # its usage-index rows (see append)


_STOP = object()


@dataclass(frozen=True, slots=True)
class BlockingWriter:
    """A store's blocking batch writer and the one-thread executor it runs on (see ``_blocking_writer``)."""

    executor: Executor
    write: Callable[[Sequence[PendingRecord]], Sequence[Outcome]]


def _logging_failed(record: LogRecord, message: str) -> MessageLogError:
    # The record says which proxy's exchange failed to log: a store serves both proxies of a server, and a
    # failed write surfaces on the writer's thread or in a batch, away from either proxy's entry point.
    return MessageLogError(message).at_side(CLIENT_PROXY if record.side == "client" else SERVER_PROXY)


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
        # Blobs (origin, name) known to be committed: the writer's (its thread's, for a blocking writer), so
        # that a blob already stored costs nothing; forgotten on any failed batch. And the reads' cache.
        self._blobs_stored: set[tuple[str, str]] = set()
        self._blob_cache: dict[tuple[str, str], bytes] = {}
        self._encoding: set[asyncio.Future[Appended]] = set()  # start()'s appends of large bodies
        self.observer: CommitObserver | None = None  # commits and waits, for metrics (set by the runtime)
        self.last_error: str | None = None  # why the last batch failed; None once one commits again
        self._batch_started = 0.0

    @property
    def in_database(self) -> bool:
        """Whether the records go to an SQL database (the server's ``database_url``), so that a database that
        takes writes again means that the next commit can succeed (the readiness check, gateway.server.health)."""
        return False

    @property
    def queue_depth(self) -> int:
        """Records accepted and not yet committed (queued, or in the batch being written)."""
        return len(self._pending) + len(self._in_flight or ()) + self._queue.qsize()

    def writer_problem(self) -> str | None:
        """Why the writer cannot take records now (closed, stopped, its last batch failed), or None."""
        if self._closed:
            return "the message log is closed"
        if self._writer is not None and self._writer.done():
            return "the message log writer has stopped"
        return self.last_error

    async def append(self, record: LogRecord, *, index_rows: IndexRows | None = None) -> Appended:
        """Log ``record`` and return once it is committed.

        ``index_rows``, given the record's sequence number, gives rows of ``messagelog_usage_index`` (a mapping
        of column to value each, naming the record's origin and that number) that the writer inserts in the
        same transaction as the record: both are committed, or neither (docs/messagelog.md section 2). It is
        called on the writer's thread, possibly more than once (a batch written again after a replay was
        refused), and must only compute.

        Raises:
            MessageLogError: the store is closed, the body is larger than ``max_body_bytes``, or the batch
                holding the record could not be committed, its index rows included (nothing of it is stored).
        """
        # (1) Refuse early what can never be written.
        self._refuse(record)
        # (2) Encode and hash in the caller (in a thread for large bodies), so the writer only writes.
        if record.loggable_size > THREAD_ENCODE_BYTES:
            encoded, leaf = await asyncio.to_thread(_encode, record)
        else:
            encoded, leaf = _encode(record)
        # (3) Queue for the writer and wait for its commit.
        return await self._enqueue(record, encoded, leaf, index_rows=index_rows)

    def start(self, record: LogRecord, *, index_rows: IndexRows | None = None) -> asyncio.Future[Appended]:
        """Queue ``record`` now and return a future of what :meth:`append` returns, for a caller with other
        work to do while the record commits (the consumer's request record commits while the request travels,
        docs/messagelog.md section 11).

        A record is queued before this returns, so it joins the batch of this turn of the event loop (one
        with a body over :data:`THREAD_ENCODE_BYTES` is encoded in a thread first, then queued). It is
        committed whether or not anybody awaits the future: cancelling a wait for it withdraws nothing. A
        failure that nobody awaits is not reported as an unretrieved exception (the writer logs every failed
        batch). ``index_rows``: as :meth:`append`'s.

        Raises:
            MessageLogError: the store is closed, its writer has stopped, or the body is larger than
                ``max_body_bytes`` (nothing is queued). A failed commit is the future's exception, as it is
                :meth:`append`'s.
        """
        self._refuse(record)
        future: asyncio.Future[Appended]
        if record.loggable_size > THREAD_ENCODE_BYTES:
            task = asyncio.ensure_future(self.append(record, index_rows=index_rows))
            self._encoding.add(task)  # held until done: a task nobody holds may be collected mid-way
            task.add_done_callback(self._encoding.discard)
            task.add_done_callback(_observe)
            future = asyncio.shield(task)  # a cancelled wait must not cancel the encoding and queueing
        else:
            future = self._enqueue(record, *_encode(record), index_rows=index_rows)
        future.add_done_callback(_observe)
        return future

    def start_body_apart(self, record: LogRecord, body: AsyncIterable[bytes]) -> asyncio.Future[Appended]:
        """:meth:`append_body_apart` started now, as :meth:`start` starts :meth:`append`: a future of what it
        returns, for a caller with other work to do while the body and its record are written (the consumer's
        request record of a streamed exchange, docs/messagelog.md section 11). The body is stored and the record
        committed whether or not anybody awaits the future; ``body`` must stay readable until it is done.

        Raises:
            MessageLogError: the store is closed (nothing is started); anything else is the future's, as it is
                :meth:`append_body_apart`'s.
        """
        if self._closed:
            raise _logging_failed(record, "the message log is closed")
        task = asyncio.ensure_future(self.append_body_apart(record, body))
        self._encoding.add(task)  # held until done, and awaited by close() like start()'s large records
        task.add_done_callback(self._encoding.discard)
        task.add_done_callback(_observe)
        future = asyncio.shield(task)  # a cancelled wait must not cancel the write
        future.add_done_callback(_observe)
        return future

    def _refuse(self, record: LogRecord) -> None:
        if self._closed:
            raise _logging_failed(record, "the message log is closed")
        if record.loggable_size > self.max_body_bytes:
            raise _logging_failed(
                record,
                f"message body of {record.loggable_size} bytes exceeds the loggable maximum of "
                f"{self.max_body_bytes} bytes",
            )

    def _enqueue(
        self, record: LogRecord, encoded: bytes, leaf: bytes, *, body_ref: str | None = None,
        body_size: int | None = None, index_rows: IndexRows | None = None,
    ) -> asyncio.Future[Appended]:
        """Queue an encoded record for the writer; the future of its commit (rule 3 of append)."""
        loop = asyncio.get_running_loop()
        pending = PendingRecord(record=record, encoded=encoded, leaf_hash=leaf, future=loop.create_future(),
                                blobs=record.blobs(), body_ref=body_ref, body_size=body_size, index_rows=index_rows)
        if not self._blocking_known:
            self._blocking, self._blocking_known = self._blocking_writer(), True
        if self._blocking is not None:
            self._pending.append(pending)
            if self._in_flight is None and not self._kicked:
                # The writer is idle: the batch starts on the next turn of the loop, with whatever else is
                # appended in this one (as a writer task woken by the queue would take it).
                self._kicked = True
                loop.call_soon(self._kick, loop, self._blocking)
            return pending.future
        if self._writer is None:
            self._writer = loop.create_task(self._run(), name=f"{type(self).__name__}-writer")
        elif self._writer.done():
            raise _logging_failed(record, "the message log writer has stopped")
        self._queue.put_nowait(pending)
        return pending.future

    # ---- large bodies, stored apart in chunks (docs/messagelog.md section 2, "Large bodies") --------------

    async def append_body_apart(self, record: LogRecord, body: AsyncIterable[bytes]) -> Appended:
        """Log ``record`` (which carries no body: ``body=None``) with the body whose chunks ``body`` gives
        (``Spool.chunks()``), and return once both are committed, with no more than
        :data:`BODY_CHUNK_BYTES` of the body in memory.

        The record is the one whose encoding has that body, byte for byte and leaf hash for leaf hash
        (:class:`~gateway.messagelog.record.StreamedEncoding`): a verifier cannot tell how it was stored.
        The steps: (1) refuse what can never be written; (2) store the body as chunks of
        :data:`BODY_CHUNK_BYTES`, each committed on its own, hashing its base64 into the record's leaf hash
        in a worker thread; (3) queue the record, naming the stored body, for the group commit, and wait for
        it. A body is durable before its record is; a body whose record was never committed (a failure, a
        crash in between) is dropped, or left without any record naming it.

        Raises:
            MessageLogError: the store is closed, ``record`` has a body of its own, the body is larger than
                ``max_body_bytes``, ``body`` failed, or a write failed (nothing of the record is stored).
        """
        # (1) Refuse early what can never be written.
        if self._closed:
            raise _logging_failed(record, "the message log is closed")
        try:
            streamed = StreamedEncoding(record)
        except MessageLogError as e:
            raise _logging_failed(record, e.message) from e
        # (2) The body, in committed chunks, hashed as it goes.
        body_id = uuid.uuid4().hex
        gathered: list[bytes] = []
        gathered_size = n = 0

        async def store_chunk(data: bytes) -> None:
            nonlocal n
            await asyncio.to_thread(streamed.update, data)
            await self._stage_body_chunk(body_id, n, data)
            n += 1

        try:
            async for chunk in body:
                if streamed.body_size + gathered_size + len(chunk) > self.max_body_bytes:
                    raise _logging_failed(record, f"message body of more than {self.max_body_bytes} bytes exceeds "
                                                  f"the loggable maximum of {self.max_body_bytes} bytes")
                gathered.append(chunk)
                gathered_size += len(chunk)
                while gathered_size >= BODY_CHUNK_BYTES:
                    data = b"".join(gathered)
                    gathered = [data[BODY_CHUNK_BYTES:]]
                    gathered_size -= BODY_CHUNK_BYTES
                    await store_chunk(data[:BODY_CHUNK_BYTES])
            if gathered_size or n == 0:
                await store_chunk(b"".join(gathered))
            _, leaf = streamed.finish()
        except BaseException as e:
            await self._drop_body_quietly(body_id)
            if isinstance(e, GatewayError | asyncio.CancelledError) or not isinstance(e, Exception):
                raise
            raise _logging_failed(record, f"message body could not be logged: {_describe(e)}") from e
        # (3) The record, naming its body, through the group commit.
        try:
            return await self._enqueue(record, record.encode(), leaf, body_ref=body_id,
                                       body_size=streamed.body_size)
        except MessageLogError:
            await self._drop_body_quietly(body_id)  # the batch failed: no record names the body
            raise

    async def _drop_body_quietly(self, body_id: str) -> None:
        try:
            await asyncio.shield(self._drop_body(body_id))
        except Exception as e:  # what is left is named by no record: it only takes space
            log.warning("messagelog_body_drop_failed", body_id=body_id, error=_describe(e))

    async def body_chunks(self, stored: StoredRecord) -> AsyncIterator[bytes]:
        """The body of a record stored apart, chunk by chunk, as received.

        Raises:
            MessageLogError: the record's body is not stored apart, the backend failed, or the stored chunks
                do not add up to its ``body_size`` (a chunk is missing).
        """
        if stored.body_ref is None or stored.body_size is None:
            raise MessageLogError(f"record {stored.seq} of {stored.origin} has no body stored apart")
        size = n = 0
        while size < stored.body_size or n == 0:
            data = await self._guard(self._body_chunk(stored.body_ref, n))
            if data is None:
                break
            size += len(data)
            n += 1
            yield data
        if size != stored.body_size:
            raise MessageLogError(f"record {stored.seq} of {stored.origin}: its body stored apart holds {size} "
                                  f"bytes in {n} chunks, not the {stored.body_size} the record names")

    async def encoded_chunks(self, stored: StoredRecord, *, check: bool = True) -> AsyncIterator[bytes]:
        """The encoding of a record stored apart, with its body, piece by piece (head, base64, tail), checked at
        its end against the record's leaf hash unless ``check`` is false (an export passes on what is stored,
        for the verifier to judge).

        Raises:
            MessageLogError: as :meth:`body_chunks`; or the stored bytes do not end as a record's encoding.
            TrustError: (with ``check``) the stored bytes are not a record, or the encoding with the body does
                not hash to the stored leaf hash (the record or its body was altered).
        """
        if check:
            stored.decode()
        if not stored.encoded.startswith(b'{"body":null'):
            raise MessageLogError(f"record {stored.seq} of {stored.origin} names a body stored apart but its stored "
                                  f"encoding does not begin with a null body")
        streamed = StreamedEncoding.of_bodyless(stored.encoded)
        yield BODY_HEAD
        async for chunk in self.body_chunks(stored):
            yield await asyncio.to_thread(streamed.update, chunk)
        last, leaf = streamed.finish()
        if check and leaf != stored.leaf_hash:
            raise TrustError(f"record {stored.seq} of {stored.origin}: its encoding with the body stored apart does "
                             f"not hash to its leaf hash: the record or its body was altered")
        yield last

    @abstractmethod
    async def _stage_body_chunk(self, body_id: str, n: int, data: bytes) -> None:
        """Store and commit chunk ``n`` of body ``body_id``."""

    @abstractmethod
    async def _drop_body(self, body_id: str) -> None:
        """Remove every chunk of body ``body_id``."""

    @abstractmethod
    async def _body_chunk(self, body_id: str, n: int) -> bytes | None:
        """Chunk ``n`` of body ``body_id``, or None when it has fewer."""

    async def close(self) -> None:
        """Refuse new records, commit everything queued, stop the writer. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._encoding:  # start()'s large records still being encoded: they were accepted, so they are queued
            await asyncio.gather(*self._encoding, return_exceptions=True)
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
        self._batch_started = time.perf_counter()
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
        seqs: Sequence[Outcome] | None, error: BaseException | None,
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
        self._batch_started = time.perf_counter()
        try:
            seqs = await self._write_batch(batch)
        except Exception as e:  # any failure of the backend fails the batch closed
            self._settle(batch, None, e)
            return
        self._settle(batch, seqs, None)

    def _settle(
        self, batch: list[PendingRecord], seqs: Sequence[Outcome] | None, error: BaseException | None,
    ) -> None:
        observer = self.observer
        if error is not None:
            self.last_error = f"the last commit failed: {_describe(error)}"
            if observer is not None:
                observer.commit_done(len(batch), 0.0, failed=True)
            self.stats.failed_batches += 1
            log.error("messagelog_commit_failed", records=len(batch), error=repr(error))
            for p in batch:
                if not p.future.done():
                    err = _logging_failed(p.record, f"message log write failed: {_describe(error)}")
                    err.__cause__ = error
                    p.future.set_exception(err)
            return
        assert seqs is not None
        written = sum(not isinstance(seq, GatewayError) for seq in seqs)
        self.stats.batches += 1
        self.stats.records += written
        self.stats.largest_batch = max(self.stats.largest_batch, written)
        self.last_error = None
        if observer is not None:
            done = time.perf_counter()
            observer.commit_done(written, done - self._batch_started, failed=False)
            for p in batch:
                observer.record_waited(p.record.side, done - p.queued_at)
        for p, seq in zip(batch, seqs, strict=True):
            if p.future.done():  # a caller cancelled while waiting: its record is still logged
                continue
            if isinstance(seq, GatewayError):  # refused alone, the rest of its batch written (a replay)
                p.future.set_exception(seq)
            else:
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
            found = await self._read(origin, start, limit)
            if not found:
                return found
            names = {n for r in found for n in blob_refs(r.encoded) if n is not None}
            blobs = MappingProxyType(await self._cached_blobs(origin, names))
            return [dataclasses.replace(r, blobs=blobs) for r in found]
        except GatewayError:
            raise
        except Exception as e:
            raise MessageLogError(f"message log read failed: {_describe(e)}") from e

    async def blobs(self, origin: str, names: Iterable[str]) -> dict[str, bytes]:
        """The blobs of ``origin``'s log with these names (hex SHA-256) that it holds; a name it does not hold
        is left out.

        Raises:
            MessageLogError: the backend failed.
        """
        return await self._guard(self._cached_blobs(origin, set(names)))

    async def _cached_blobs(self, origin: str, names: Collection[str]) -> dict[str, bytes]:
        cache = self._blob_cache
        out = {n: cache[(origin, n)] for n in names if (origin, n) in cache}
        missing = [n for n in names if n not in out]
        if missing:
            found = await self._read_blobs(origin, missing)
            if len(cache) + len(found) > BLOB_CACHE:
                cache.clear()
            for n, data in found.items():
                cache[(origin, n)] = data
            out.update(found)
        return out

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

    async def add_cosignatures(self, origin: str, size: int, cosignatures: Sequence[Cosignature]) -> int:
        """Keep witnesses' cosignatures of the checkpoint of ``origin`` at ``size`` (the caller has verified
        them, :mod:`gateway.witness.pusher`). Idempotent: a cosignature by a (witness, key ID) that the checkpoint
        has already is left as it is. Returns how many were new.

        Raises:
            MessageLogError: no checkpoint of that size, or the backend failed.
        """
        if await self.checkpoint(origin, size) is None:
            raise MessageLogError(f"no checkpoint of {origin} at size {size} to add cosignatures to")
        unique = {(c.name, c.key_id): c for c in cosignatures}
        return await self._guard(self._add_cosignatures(origin, size, list(unique.values())))

    async def cosignatures(self, origin: str, size: int | None = None) -> list[StoredCosignature]:
        """The cosignatures kept for ``origin``'s checkpoints (only that of ``size`` if given), by size then
        witness name.

        Raises:
            MessageLogError: the backend failed.
        """
        found = await self._guard(self._cosignatures(origin, size))
        return sorted(found, key=lambda c: (c.size, c.cosignature.name, c.cosignature.key_id))

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
    async def _add_cosignatures(self, origin: str, size: int, cosignatures: Sequence[Cosignature]) -> int: ...

    @abstractmethod
    async def _cosignatures(self, origin: str, size: int | None) -> list[StoredCosignature]: ...

    @abstractmethod
    async def _pruned_before(self, origin: str) -> int: ...

    @abstractmethod
    async def _prune(self, origin: str, before_seq: int, now: datetime) -> int: ...

    @abstractmethod
    async def _write_batch(self, batch: Sequence[PendingRecord]) -> Sequence[Outcome]:
        """Store the whole batch atomically, with the blobs its records name that are not stored yet and their
        index rows (:func:`~gateway.messagelog.store.rows._index_rows`); return each record's sequence number,
        in batch order (or the error refusing that record alone, the rest of the batch being stored: a replay,
        see :mod:`~gateway.messagelog.store.replay`)."""

    @abstractmethod
    async def _size(self, origin: str) -> int: ...

    @abstractmethod
    async def _read(self, origin: str, start: int, limit: int) -> list[StoredRecord]: ...

    @abstractmethod
    async def _read_blobs(self, origin: str, names: Sequence[str]) -> dict[str, bytes]: ...


def _observe(future: asyncio.Future[Appended]) -> None:
    # Marks a failure as retrieved: whoever awaits the future still gets it; nobody is told of it twice.
    if not future.cancelled():
        future.exception()


def _encode(record: LogRecord) -> tuple[bytes, bytes]:
    encoded = record.encode()
    return encoded, leaf_hash(encoded)

def _describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


__all__ = [
    "BLOB_CACHE",
    "BODY_CHUNK_BYTES",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_LEAF_READ",
    "MAX_READ",
    "THREAD_ENCODE_BYTES",
    "Appended",
    "BlockingWriter",
    "IndexRows",
    "MessageLogStore",
    "PendingRecord",
    "StoredCheckpoint",
    "StoredCosignature",
    "StoredRecord",
    "WriterStats",
]
