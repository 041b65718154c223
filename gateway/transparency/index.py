"""The blind index of usage records, salts included (I/O: reads): table ``messagelog_usage_index`` beside the
message log (docs/transparency.md section 3), or the in-memory log's rows.

It is the agency's: never exported with archives. Its rows are written by the message log's writer, in the
transaction of their usage record (``MessageLogStore.append(record, index_rows=...)``, see :func:`index_rows`):
a record and its rows are committed together or not at all. This module reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from gateway.messagelog.models import usage_index
from gateway.messagelog.store.base import MessageLogStore
from gateway.messagelog.store.memory import MemoryMessageLogStore
from gateway.messagelog.store.sql import SqlMessageLogStore
from gateway.transparency.records import IndexRow


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


def row_values(r: IndexRow) -> dict[str, Any]:
    """``r`` as a row of ``messagelog_usage_index`` (column to value)."""
    return {
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


def row_of(m: Mapping[str, Any]) -> IndexRow:
    """A row of ``messagelog_usage_index`` as read."""
    return IndexRow(
        subject_index=bytes(m["subject_index"]),
        origin=m["origin"],
        seq=int(m["seq"]),
        salt=bytes(m["salt"]),
        created=m["created"],
        side=m["side"],
        client=m["client"],
        provider=m["provider"],
        embargo_until=m["embargo_until"],
    )


def index_rows(rows: Callable[[int], Sequence[IndexRow]]) -> Callable[[int], list[dict[str, Any]]]:
    """What the message log's writer takes with a usage record (``index_rows``): given the record's sequence
    number, its rows of ``messagelog_usage_index``."""
    return lambda seq: [row_values(r) for r in rows(seq)]


class UsageIndex:
    """The blind index of one security server's message log (reads)."""

    def __init__(self, store: MessageLogStore) -> None:
        self._engine = store.engine if isinstance(store, SqlMessageLogStore) else None
        self._memory = store if isinstance(store, MemoryMessageLogStore) else None

    def _memory_rows(self) -> list[IndexRow]:
        return [] if self._memory is None else [row_of(m) for m in self._memory.usage_index_rows()]

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
        if self._engine is None:
            found = sorted(
                (
                    r
                    for r in self._memory_rows()
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
            rows = [row_of(dict(m)) for m in result.mappings()]
        return Page(total=int(total), rows=rows)

    async def period(self, subsystem: str) -> tuple[datetime | None, datetime | None]:
        """The first and last time of the rows about ``subsystem`` (``usagePeriod``)."""
        if self._engine is None:
            times = [r.created for r in self._memory_rows() if r.client == subsystem or r.provider == subsystem]
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
        per: dict[str, tuple[set[tuple[str, int]], set[tuple[str, int]]]] = {}
        if self._engine is None:
            items = [(r.client, r.origin, r.seq, r.embargo_until) for r in self._memory_rows()]
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


__all__ = ["ClientCounts", "Page", "UsageIndex", "index_rows", "row_of", "row_values"]
