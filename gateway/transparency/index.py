"""The blind index of usage records, salts included (I/O): table ``messagelog_usage_index`` beside the message
log (docs/transparency.md section 3), or a list in memory for the in-memory log.

It is the agency's: never exported with archives. A row is written once its usage record is committed; a
failure between the two leaves a record that ``findUsage`` does not find (logged as an error), never an index
row without its record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
import structlog

from gateway.errors import MessageLogError
from gateway.messagelog.models import usage_index
from gateway.messagelog.store.base import MessageLogStore
from gateway.messagelog.store.sql import SqlMessageLogStore
from gateway.transparency.records import IndexRow

log = structlog.get_logger("gateway.transparency")


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    total: int  # visible rows in the period (embargoed ones not counted)
    rows: list[IndexRow]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientCounts:
    """Per client: usage rows, and how many of them are embargoed at ``now`` (for auditors)."""

    client: str
    records: int
    embargoed: int


def _about(r: IndexRow, subsystem: str) -> bool:
    return (r.side == "client" and r.client == subsystem) or (r.side == "server" and r.provider == subsystem)


class UsageIndex:
    """The blind index of one security server's message log."""

    def __init__(self, store: MessageLogStore) -> None:
        self._engine = store.engine if isinstance(store, SqlMessageLogStore) else None
        self._rows: list[IndexRow] = []
        self._pending: list[IndexRow] = []
        self._writer: asyncio.Task[None] | None = None
        self.failures = 0  # rows that could not be written

    def queue(self, rows: Sequence[IndexRow]) -> None:
        """Queue rows for the writer, which writes whatever is queued in one transaction (its own group commit:
        one index insert per batch of exchanges rather than per exchange, off the exchange's path)."""
        if self._engine is None:
            self._rows.extend(rows)
            return
        self._pending.extend(rows)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_pending(), name="usage-index-writer")

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self.add(batch)
            except MessageLogError as e:
                if len(batch) == 1:
                    self.failures += 1
                    log.error(
                        "transparency index row not written", origin=batch[0].origin, seq=batch[0].seq, error=e.message
                    )
                    continue
                for one in batch:  # one bad row must not take the batch's others with it
                    try:
                        await self.add([one])
                    except MessageLogError as e1:
                        self.failures += 1
                        log.error(
                            "transparency index row not written", origin=one.origin, seq=one.seq, error=e1.message
                        )

    async def flush(self) -> None:
        """Wait until every queued row is written (or counted as failed)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def close(self) -> None:
        await self.flush()

    async def add(self, rows: Sequence[IndexRow]) -> None:
        """Write ``rows`` now. Raises: MessageLogError: the rows cannot be written."""
        if not rows:
            return
        if self._engine is None:
            self._rows.extend(rows)
            return
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    usage_index.insert(),
                    [
                        {
                            "subject_index": r.subject_index,
                            "origin": r.origin,
                            "seq": r.seq,
                            "salt": r.salt,
                            "created": r.created,
                            "side": r.side,
                            "client": r.client,
                            "provider": r.provider,
                            "embargo_until": r.embargo_until,
                        }
                        for r in rows
                    ],
                )
        except (sa.exc.SQLAlchemyError, OSError) as e:
            raise MessageLogError(f"the transparency index cannot be written: {e}") from e

    async def find(
        self,
        subject_index: bytes,
        *,
        subsystem: str,
        start: datetime,
        end: datetime,
        now: datetime,
        offset: int,
        limit: int,
    ) -> Page:
        """The rows of one subject about ``subsystem`` (its access records as a client, its disclosure records as
        a provider) created in ``[start, end)``, newest first, embargoed ones left out."""
        await self.flush()
        if self._engine is None:
            found = sorted(
                (
                    r
                    for r in self._rows
                    if r.subject_index == subject_index
                    and start <= r.created < end
                    and _about(r, subsystem)
                    and (r.embargo_until is None or r.embargo_until <= now)
                ),
                key=lambda r: (r.created, r.seq),
                reverse=True,
            )
            return Page(total=len(found), rows=found[offset : offset + limit])
        t = usage_index.c
        where = sa.and_(
            t.subject_index == subject_index,
            t.created >= start,
            t.created < end,
            sa.or_(
                sa.and_(t.side == "client", t.client == subsystem), sa.and_(t.side == "server", t.provider == subsystem)
            ),
            sa.or_(t.embargo_until.is_(None), t.embargo_until <= now),
        )
        async with self._engine.connect() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(usage_index).where(where))).scalar_one()
            result = await conn.execute(
                sa.select(usage_index).where(where).order_by(t.created.desc(), t.seq.desc()).offset(offset).limit(limit)
            )
            rows = [
                IndexRow(
                    subject_index=m["subject_index"],
                    origin=m["origin"],
                    seq=m["seq"],
                    salt=m["salt"],
                    created=m["created"],
                    side=m["side"],
                    client=m["client"],
                    provider=m["provider"],
                    embargo_until=m["embargo_until"],
                )
                for m in result.mappings()
            ]
        return Page(total=int(total), rows=rows)

    async def period(self, subsystem: str) -> tuple[datetime | None, datetime | None]:
        """The first and last time of the rows about ``subsystem`` (``usagePeriod``)."""
        await self.flush()
        if self._engine is None:
            times = [r.created for r in self._rows if r.client == subsystem or r.provider == subsystem]
            return (min(times), max(times)) if times else (None, None)
        t = usage_index.c
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(sa.func.min(t.created), sa.func.max(t.created)).where(
                        sa.or_(t.client == subsystem, t.provider == subsystem)
                    )
                )
            ).one()
        return row[0], row[1]

    async def counts(self, now: datetime) -> list[ClientCounts]:
        """Per client: records and embargoed ones (rows counted once per usage record)."""
        await self.flush()
        per: dict[str, tuple[set[tuple[str, int]], set[tuple[str, int]]]] = {}
        if self._engine is None:
            items = [(r.client, r.origin, r.seq, r.embargo_until) for r in self._rows]
        else:
            t = usage_index.c
            async with self._engine.connect() as conn:
                result = await conn.execute(sa.select(t.client, t.origin, t.seq, t.embargo_until).distinct())
                items = [(m[0], m[1], m[2], m[3]) for m in result]
        for client, origin, seq, until in items:
            allr, emb = per.setdefault(client, (set(), set()))
            allr.add((origin, seq))
            if until is not None and until > now:
                emb.add((origin, seq))
        return [ClientCounts(client=c, records=len(a), embargoed=len(e)) for c, (a, e) in sorted(per.items())]


__all__ = ["ClientCounts", "Page", "UsageIndex"]
