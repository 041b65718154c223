"""Message-log storage with group commit (I/O).

docs/messagelog.md: a record is durable **before** the exchange depends on it (section 11: before the service
sees the request, before an answer leaves), and durability must not cost throughput.
:meth:`MessageLogStore.append` therefore queues the record and waits (:meth:`MessageLogStore.start` queues it
and returns the future to wait on later); one writer task per store takes everything queued (up to
``max_batch`` records), assigns each record the next sequence number of its origin, writes the whole batch in
**one transaction**, and only after the commit resolves each caller. While one transaction is in flight, new
records queue up for the next, so under load one commit (one fsync) serves many exchanges.

Rules the writer keeps:

1. Sequence numbers are assigned inside the writer, per origin, dense and gap-free from 0: the next number
   is one past the highest committed one, read in the same transaction. A failed batch commits nothing, so
   it leaves no gap.
2. If the batch cannot be committed, every caller in it gets :class:`~gateway.errors.MessageLogError`
   (``Server.ClientProxy.LoggingFailed`` or ``Server.ServerProxy.LoggingFailed`` by the record's side) and
   the transaction is rolled back: nothing of the batch is stored (its blobs and the usage-index rows its
   records brought, ``append(record, index_rows=...)``, included). The writer carries on with the next batch.
3. One writer per origin: two processes must not log under one origin (the primary key refuses it, and
   the batch fails closed).
4. ``close()`` refuses new records, lets the writer commit everything queued, then returns.

:class:`SqlMessageLogStore` is the real store (SQLite, with ``synchronous=FULL`` for log commits, or
PostgreSQL); :class:`MemoryMessageLogStore` is the test double, with the same writer and a switch to fail.

The package, one concern per module: :mod:`~gateway.messagelog.store.base` (:class:`MessageLogStore`, the group
commit and rules 1-4, the stored values), :mod:`~gateway.messagelog.store.sql` (:class:`SqlMessageLogStore`:
reads, checkpoints and retention, common to both dialects), :mod:`~gateway.messagelog.store.sqlite` (its SQLite
writer), :mod:`~gateway.messagelog.store.postgres` (its PostgreSQL writer), :mod:`~gateway.messagelog.store.rows`
(what both writers share), :mod:`~gateway.messagelog.store.memory` (:class:`MemoryMessageLogStore`).
"""

from gateway.messagelog.store.base import (
    BODY_CHUNK_BYTES,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_BYTES,
    MAX_LEAF_READ,
    MAX_READ,
    THREAD_ENCODE_BYTES,
    Appended,
    BlockingWriter,
    MessageLogStore,
    PendingRecord,
    StoredCheckpoint,
    StoredCosignature,
    StoredRecord,
    WriterStats,
)
from gateway.messagelog.store.memory import MemoryMessageLogStore
from gateway.messagelog.store.sql import MIGRATIONS, SqlMessageLogStore, migrate_messagelog

__all__ = [
    "BODY_CHUNK_BYTES",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY_BYTES",
    "MAX_LEAF_READ",
    "MAX_READ",
    "MIGRATIONS",
    "THREAD_ENCODE_BYTES",
    "Appended",
    "BlockingWriter",
    "MemoryMessageLogStore",
    "MessageLogStore",
    "PendingRecord",
    "SqlMessageLogStore",
    "StoredCheckpoint",
    "StoredCosignature",
    "StoredRecord",
    "WriterStats",
    "migrate_messagelog",
]
