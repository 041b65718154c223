"""What the writers of the message-log stores share: a batch numbered into rows of ``messagelog_records``, its
new blobs as rows of ``messagelog_blobs``, its records' rows of ``messagelog_usage_index``, and the query for the
highest sequence number of an origin (pure: builds values and statements, runs nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from gateway.errors import MessageLogError
from gateway.messagelog.models import records, usage_index
from gateway.messagelog.store.base import PendingRecord
from gateway.messagelog.store.replay import replay_key

_ROW_COLUMNS = (
    "origin", "seq", "created", "message_id", "request_id", "kind", "side", "client", "service", "record",
    "leaf_hash", "replay_key", "body_ref", "body_size",
)

_INDEX_COLUMNS = tuple(c.name for c in usage_index.columns)


def _max_seq_query(origin: str | sa.BindParameter[str]) -> sa.Select[Any]:
    """The highest sequence number committed for ``origin`` (NULL: none yet)."""
    return sa.select(sa.func.max(records.c.seq)).where(records.c.origin == origin)


def _rows(batch: Sequence[PendingRecord], next_seq: dict[str, int]) -> tuple[list[int], list[dict[str, object]]]:
    """Each record's sequence number (the next of its origin in ``next_seq``, which this advances), and its row."""
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
            "service": str(r.service), "record": p.encoded, "leaf_hash": p.leaf_hash, "replay_key": replay_key(r),
            "body_ref": p.body_ref, "body_size": p.body_size,
        })
    return seqs, rows


def _new_blobs(batch: Sequence[PendingRecord], stored: set[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    """The blobs the batch names that are not in ``stored`` (known to be committed): the writer adds them to
    the batch's transaction (as an insert that skips those already there), so that no record names a blob that
    is not durable, and one already stored costs nothing."""
    new: dict[tuple[str, str], bytes] = {}
    for p in batch:
        origin = p.record.origin
        for name, data in p.blobs:
            key = (origin, name)
            if key not in stored:
                new[key] = data
    return new


def _blob_rows(new: Mapping[tuple[str, str], bytes]) -> list[dict[str, object]]:
    """Rows of ``messagelog_blobs`` for the blobs :func:`_new_blobs` gave (in a stable order)."""
    return [{"origin": origin, "sha256": name, "data": data} for (origin, name), data in sorted(new.items())]


def _index_rows(batch: Sequence[PendingRecord], seqs: Sequence[int]) -> list[dict[str, object]]:
    """The rows of ``messagelog_usage_index`` that the batch's records bring (``PendingRecord.index_rows``, given
    each record's sequence number), checked: each has exactly the table's columns and names its own record's
    origin and sequence number, so that no row can point at a record other than the one it commits with.

    Raises:
        MessageLogError: a row that does not (the whole batch fails: nothing of it is stored).
    """
    out: list[dict[str, object]] = []
    for p, seq in zip(batch, seqs, strict=True):
        if p.index_rows is None:
            continue
        for row in p.index_rows(seq):
            if row.keys() != set(_INDEX_COLUMNS):
                raise MessageLogError(f"an index row of record {seq} of {p.record.origin} has the columns "
                                      f"{sorted(row)}, not those of messagelog_usage_index")
            if row["origin"] != p.record.origin or row["seq"] != seq:
                raise MessageLogError(f"an index row names record {row['seq']} of {row['origin']}, not its own "
                                      f"record {seq} of {p.record.origin}")
            out.append(dict(row))
    return out
