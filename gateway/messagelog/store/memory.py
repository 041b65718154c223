"""The in-memory message-log store: the test double, with the real writer and a switch to fail (I/O: only the
event loop).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.errors import MessageLogError
from gateway.messagelog.models import usage_index
from gateway.messagelog.record import LogRecord, decode
from gateway.messagelog.store.base import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_BYTES,
    MessageLogStore,
    PendingRecord,
    StoredCheckpoint,
    StoredCosignature,
    StoredRecord,
)
from gateway.messagelog.store.rows import _index_rows
from gateway.trust.cosignature import Cosignature

_INDEX_KEY = tuple(c.name for c in usage_index.primary_key.columns)


class MemoryMessageLogStore(MessageLogStore):
    """In-memory test double with the real writer; set ``fail_with`` to make the next commits fail."""

    def __init__(
        self, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        super().__init__(max_body_bytes=max_body_bytes, max_batch=max_batch)
        self._logs: dict[str, list[StoredRecord]] = {}
        self._cps: dict[str, dict[int, StoredCheckpoint]] = {}
        self._pruned: dict[str, int] = {}
        self._cosigs: dict[tuple[str, int], dict[tuple[str, bytes], Cosignature]] = {}
        self._blob_data: dict[str, dict[str, bytes]] = {}  # per origin, by name
        self._bodies: dict[str, list[bytes]] = {}  # bodies stored apart, by id
        self._usage_index: list[dict[str, object]] = []  # the rows of messagelog_usage_index, in commit order
        self._usage_keys: set[tuple[object, ...]] = set()  # their primary keys
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
            log_.append(StoredRecord(origin=origin, seq=seq, encoded=p.encoded, leaf_hash=p.leaf_hash,
                                     body_ref=p.body_ref, body_size=p.body_size))
            seqs.append(seq)
        index_rows = _index_rows(batch, seqs)  # checked before anything is kept: a bad row fails the batch
        keys = [tuple(r[c] for c in _INDEX_KEY) for r in index_rows]
        if len(set(keys)) != len(keys) or self._usage_keys.intersection(keys):  # as the table's primary key
            raise MessageLogError("duplicate key in messagelog_usage_index")
        for origin, new in staged.items():
            self._logs.setdefault(origin, []).extend(new)
        for p in batch:  # in the same step as the records (there is nothing to roll back after the check above)
            self._blob_data.setdefault(p.record.origin, {}).update(p.blobs)
        self._usage_index.extend(index_rows)
        self._usage_keys.update(keys)
        return seqs

    def usage_index_rows(self) -> list[Mapping[str, Any]]:
        """The committed rows of ``messagelog_usage_index`` (what the SQL stores keep in that table)."""
        return list(self._usage_index)

    async def _stage_body_chunk(self, body_id: str, n: int, data: bytes) -> None:
        await asyncio.sleep(0)
        if self.fail_with is not None:
            raise self.fail_with
        chunks = self._bodies.setdefault(body_id, [])
        if len(chunks) != n:
            raise MessageLogError(f"body {body_id}: chunk {n} stored out of order")
        chunks.append(data)

    async def _drop_body(self, body_id: str) -> None:
        self._bodies.pop(body_id, None)

    async def _body_chunk(self, body_id: str, n: int) -> bytes | None:
        chunks = self._bodies.get(body_id, [])
        return chunks[n] if n < len(chunks) else None

    def body_count(self) -> int:
        """How many bodies are stored apart (for assertions in tests)."""
        return len(self._bodies)

    async def _read_blobs(self, origin: str, names: Sequence[str]) -> dict[str, bytes]:
        mine = self._blob_data.get(origin, {})
        return {n: mine[n] for n in names if n in mine}

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

    async def _add_cosignatures(self, origin: str, size: int, cosignatures: Sequence[Cosignature]) -> int:
        mine = self._cosigs.setdefault((origin, size), {})
        new = [c for c in cosignatures if (c.name, c.key_id) not in mine]
        for c in new:
            mine[(c.name, c.key_id)] = c
        return len(new)

    async def _cosignatures(self, origin: str, size: int | None) -> list[StoredCosignature]:
        return [StoredCosignature(origin=o, size=s, cosignature=c) for (o, s), found in self._cosigs.items()
                if o == origin and (size is None or s == size) for c in found.values()]

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
        blobs = self._blob_data.get(origin, {})
        return [decode(s.encoded, blobs) for s in self._logs.get(origin, ())[self._pruned.get(origin, 0):]]

    def blob_count(self, origin: str) -> int:
        """How many blobs ``origin``'s log holds (for assertions in tests)."""
        return len(self._blob_data.get(origin, {}))

__all__ = ["MemoryMessageLogStore"]
