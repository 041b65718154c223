"""The message log as the backstop of replay protection across processes (I/O: the queries; the key is pure).

docs/messagelog.md section 5, "Replays across workers and nodes". Every provider-side request record
(``side="server"``, ``kind="request"``) carries a **replay key**: SHA-256 of its server's identifier, a zero
byte and its ``X-Road-Request-Id`` (the server being the one its origin names, :mod:`~gateway.messagelog.origins`).
Column ``replay_key`` of ``messagelog_records`` is unique where it is set (revision 0004), so one server logs
a request id once, whichever of its workers or nodes received it, and only a request the log accepted reaches
the service (the request record is durable first).

A batch is one transaction, and one row that breaks the unique index breaks the statement. So that a replay
fails only its own exchange, never the others of its batch (group commit), a batch that fails is examined:
its records whose replay key is already stored, or taken by an earlier record of the same batch, are refused
with :class:`~gateway.errors.ReplayedRequest` (the fault the in-process cache raises,
:mod:`gateway.protocol.replay`), and the rest is written again. Only a failed batch pays for this; a batch
that commits costs nothing more than the index. A failure that no replay explains fails the batch as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import SERVER_PROXY, ReplayedRequest, TrustError
from gateway.messagelog.models import records
from gateway.messagelog.origins import server_of
from gateway.messagelog.record import LogRecord
from gateway.messagelog.store.base import BlockingWriter, Outcome, PendingRecord

_servers: dict[str, bytes] = {}  # origin -> its server's identifier and the separator, encoded (few origins)


def replay_key(record: LogRecord) -> bytes | None:
    """The record's replay key (module docstring); None for every record but a provider's request."""
    if record.side != "server" or record.kind != "request":
        return None
    prefix = _servers.get(record.origin)
    if prefix is None:
        try:
            server = server_of(record.origin)
        except TrustError:  # an origin outside the naming scheme: the whole origin scopes its keys
            server = record.origin
        if len(_servers) > 1024:
            _servers.clear()
        prefix = _servers[record.origin] = server.encode() + b"\x00"
    return hashlib.sha256(prefix + record.request_id.encode("utf-8", "surrogatepass")).digest()


def refusal(record: LogRecord) -> ReplayedRequest:
    return ReplayedRequest(
        f"request id {record.request_id[:80]!r} was already received (by this or another worker or node of this "
        "server: the message log holds it)").at_side(SERVER_PROXY)


def _keys(batch: Sequence[PendingRecord]) -> list[bytes | None]:
    return [replay_key(p.record) for p in batch]


def _refused(keys: Sequence[bytes | None], stored: set[bytes]) -> set[int]:
    """Indices of the batch to refuse: a key already stored, or one an earlier record of the batch holds."""
    seen: set[bytes] = set()
    out: set[int] = set()
    for i, k in enumerate(keys):
        if k is None:
            continue
        if k in stored or k in seen:
            out.add(i)
        seen.add(k)
    return out


def _merge(batch: Sequence[PendingRecord], refused: set[int], rest: Sequence[Outcome]) -> list[Outcome]:
    it = iter(rest)
    return [refusal(p.record) if i in refused else next(it) for i, p in enumerate(batch)]


def write_refusing_replays(
    write: Callable[[Sequence[PendingRecord]], Sequence[Outcome]], batch: Sequence[PendingRecord],
    stored_keys: Callable[[list[bytes]], set[bytes]],
) -> list[Outcome]:
    """``write(batch)``; if it fails, refuse the batch's replays and write the rest (module docstring).

    Raises:
        Exception: ``write``'s error, when no record of the batch is a replay.
    """
    try:
        return list(write(batch))
    except Exception:
        keys = _keys(batch)
        wanted = [k for k in keys if k is not None]
        if not wanted:
            raise
        refused = _refused(keys, stored_keys(wanted))
        if not refused:
            raise
    rest = [p for i, p in enumerate(batch) if i not in refused]
    return _merge(batch, refused, write_refusing_replays(write, rest, stored_keys) if rest else [])


async def write_refusing_replays_async(
    write: Callable[[Sequence[PendingRecord]], Awaitable[Sequence[Outcome]]], batch: Sequence[PendingRecord],
    stored_keys: Callable[[list[bytes]], Awaitable[set[bytes]]],
) -> list[Outcome]:
    """:func:`write_refusing_replays` for a writer on the event loop.

    Raises:
        Exception: ``write``'s error, when no record of the batch is a replay.
    """
    try:
        return list(await write(batch))
    except Exception:
        keys = _keys(batch)
        wanted = [k for k in keys if k is not None]
        if not wanted:
            raise
        refused = _refused(keys, await stored_keys(wanted))
        if not refused:
            raise
    rest = [p for i, p in enumerate(batch) if i not in refused]
    return _merge(batch, refused, await write_refusing_replays_async(write, rest, stored_keys) if rest else [])


def _stored_query(keys: Sequence[bytes]) -> sa.Select[Any]:
    return sa.select(records.c.replay_key).where(records.c.replay_key.in_(list(keys)))


async def stored_keys_sql(engine: AsyncEngine, keys: list[bytes]) -> set[bytes]:
    """Which of ``keys`` the log holds (through SQLAlchemy, any dialect)."""
    found: set[bytes] = set()
    async with engine.connect() as conn:
        for i in range(0, len(keys), 500):
            found.update(bytes(k) for k in (await conn.execute(_stored_query(keys[i:i + 500]))).scalars())
    return found


_SQLITE = sa.create_engine("sqlite://").dialect


def stored_keys_sqlite(connect: Callable[[], sqlite3.Connection], keys: list[bytes]) -> set[bytes]:
    """Which of ``keys`` the log holds (through the sqlite3 driver, on the SQLite writer's thread)."""
    found: set[bytes] = set()
    conn = connect()
    try:
        for i in range(0, len(keys), 500):
            compiled = _stored_query(keys[i:i + 500]).compile(
                dialect=_SQLITE, compile_kwargs={"render_postcompile": True})
            params = [compiled.params[name] for name in compiled.positiontup or ()]
            found.update(bytes(row[0]) for row in conn.execute(compiled.string, params))
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    return found


class ReplayBackstop:
    """Mixin of :class:`~gateway.messagelog.store.sql.SqlMessageLogStore`, before its writers: both writers'
    batches go through :func:`write_refusing_replays` (module docstring)."""

    _engine: AsyncEngine

    def _blocking_writer(self) -> BlockingWriter | None:
        writer: BlockingWriter | None = super()._blocking_writer()  # type: ignore[misc]  # the writer mixed in after
        if writer is None:
            return None
        write = writer.write
        connect: Callable[[], sqlite3.Connection] = self._sqlite_open  # type: ignore[attr-defined]  # SqliteWriter's

        def refusing(batch: Sequence[PendingRecord]) -> Sequence[Outcome]:
            return write_refusing_replays(write, batch, lambda keys: stored_keys_sqlite(connect, keys))

        return BlockingWriter(writer.executor, refusing)

    async def _write_batch(self, batch: Sequence[PendingRecord]) -> Sequence[Outcome]:
        write: Any = super()._write_batch  # type: ignore[misc]  # PostgresWriter's, mixed in after this class
        return await write_refusing_replays_async(write, batch, lambda keys: stored_keys_sql(self._engine, keys))


__all__ = [
    "ReplayBackstop",
    "refusal",
    "replay_key",
    "stored_keys_sql",
    "stored_keys_sqlite",
    "write_refusing_replays",
    "write_refusing_replays_async",
]
