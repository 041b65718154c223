"""Finding message-log records by time, client, service, message id or request id, for auditors (I/O).

The SQL stores answer from the columns that copy these fields out of each record
(:data:`gateway.messagelog.models.records`; message and request ids are indexed, time, client and service are
not, so such a search reads the origin's rows); any other store (the in-memory test double) is scanned record by
record. The columns are never trusted by a verifier: a record found here is shown from its stored bytes.
Newest first. Pruned records (no stored bytes) are not found. :func:`records_since` counts the last hour's
records for the dashboard without reading them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from gateway.messagelog.models import records
from gateway.messagelog.store.base import MAX_READ, MessageLogStore, StoredRecord
from gateway.messagelog.store.sql import SqlMessageLogStore


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordQuery:
    """What to look for; ``None`` matches anything. Times are aware; ``until`` is exclusive."""

    since: datetime | None = None
    until: datetime | None = None
    client: str | None = None  # '/'-joined, as records hold it
    service: str | None = None
    message_id: str | None = None
    request_id: str | None = None


def _matches(q: RecordQuery, r: StoredRecord) -> bool:
    rec = r.decode()
    return (
        (q.since is None or rec.created >= q.since) and (q.until is None or rec.created < q.until)
        and (q.client is None or str(rec.client) == q.client) and (q.service is None or str(rec.service) == q.service)
        and (q.message_id is None or rec.message_id == q.message_id)
        and (q.request_id is None or rec.request_id == q.request_id)
    )


async def search_records(
    store: MessageLogStore, origin: str, q: RecordQuery, *, offset: int, limit: int,
) -> tuple[list[StoredRecord], int]:
    """The page ``offset``/``limit`` of ``origin``'s records that match ``q``, newest first, and how many match.

    Raises:
        MessageLogError: the store cannot be read; TrustError: a scanned record is not valid (in-memory store).
    """
    if isinstance(store, SqlMessageLogStore):
        where = [records.c.origin == origin, records.c.record.is_not(None)]
        for column, value in ((records.c.client, q.client), (records.c.service, q.service),
                              (records.c.message_id, q.message_id), (records.c.request_id, q.request_id)):
            if value is not None:
                where.append(column == value)
        if q.since is not None:
            where.append(records.c.created >= q.since)
        if q.until is not None:
            where.append(records.c.created < q.until)
        async with store.engine.connect() as conn:
            total = int(await conn.scalar(sa.select(sa.func.count()).select_from(records).where(*where)) or 0)
            seqs = [int(s) for s in (await conn.execute(
                sa.select(records.c.seq).where(*where).order_by(records.c.seq.desc()).limit(limit).offset(offset)
            )).scalars()]
        found = [r for s in seqs for r in await store.read(origin, start=s, limit=1) if r.seq == s]
        return found, total
    matched: list[StoredRecord] = []
    size = await store.size(origin)
    for start in range(0, size, MAX_READ):
        matched.extend(r for r in await store.read(origin, start=start, limit=MAX_READ) if _matches(q, r))
    matched.reverse()
    return matched[offset:offset + limit], len(matched)


async def records_since(store: MessageLogStore, origin: str, since: datetime) -> int:
    """About how many of ``origin``'s records were created at or after ``since``: a binary search over the
    sequence numbers (one point read per step, so some 20 reads for a million records), exact when the records'
    times rise with their numbers, as a single writer logs them; records of concurrent exchanges may be a few
    milliseconds out of order, so the count may be off by the few at the boundary.

    Raises:
        MessageLogError: the store cannot be read; TrustError: a record read is not valid.
    """
    low, high = await store.pruned_before(origin), await store.size(origin)
    # invariant: every record below `low` is older than `since`; `high` is the first one known not to be
    while low < high:
        mid = (low + high) // 2
        found = await store.read(origin, start=mid, limit=1)
        if not found:
            high = mid
        elif found[0].decode().created < since:
            low = min(found[0].seq + 1, high)
        else:
            high = mid
    return await store.size(origin) - low


__all__ = ["RecordQuery", "records_since", "search_records"]
