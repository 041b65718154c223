"""The witness's durable state in the security server's database: :class:`WitnessStore` (I/O).

docs/witness.md section 1. Per checkpoint origin, the checkpoint the witness last cosigned (``witness_logs``),
and the evidence of forks and inconsistent histories it refused (``witness_evidence``); tables of
:mod:`gateway.witness.models`, SQLite or PostgreSQL.

The update is a compare and set: :meth:`WitnessStore.compare_and_set` writes the new state only if the row is
still the one the decision saw (same size and root; or still absent), in one statement of one transaction. Of
two requests for one origin decided from the same state, one writes and the other sees no row changed and is
decided again (then against the new state: 409). On PostgreSQL the ``UPDATE ... WHERE`` waits for the other
transaction's row lock and re-evaluates its condition on the committed row; on SQLite writers are serialised.
The state is committed before the cosignature leaves the server (the shell answers after the commit).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import DatabaseError
from gateway.storage.db import migrate
from gateway.storage.transaction import describe, transaction
from gateway.witness import models
from gateway.witness.service import Evidence, LogState, Reason

MIGRATIONS = Path(__file__).parent / "migrations"
MAX_EVIDENCE_PER_ORIGIN = 1000  # rows; a misbehaving log cannot fill the disk through us (further ones are counted)
MAX_PAGE = 1000  # rows in one listing


def _database_error(e: BaseException) -> DatabaseError:
    return DatabaseError(f"witness database error: {describe(e)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceRow:
    """One kept piece of evidence, with its id."""

    id: int
    evidence: Evidence = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        e = self.evidence
        return {
            "id": self.id, "origin": e.origin, "recorded_at": e.recorded_at.isoformat().replace("+00:00", "Z"),
            "reason": e.reason, "message": e.message, "peer": e.peer, "old_size": e.old_size,
            "note": e.note.decode("utf-8"), "proof": [base64.b64encode(h).decode("ascii") for h in e.proof],
            "stored_note": e.stored_note.decode("utf-8"),
        }


def _state(row: sa.Row[Any]) -> LogState:
    m = row._mapping
    return LogState(origin=m["origin"], size=m["size"], root_hash=bytes(m["root_hash"]), note=bytes(m["note"]),
                    updated_at=m["updated_at"])


def _evidence(row: sa.Row[Any]) -> EvidenceRow:
    m = row._mapping
    proof = tuple(base64.b64decode(line) for line in m["proof"].split("\n") if line)
    reason: Reason = "fork" if m["reason"] == "fork" else "inconsistent"
    return EvidenceRow(id=m["id"], evidence=Evidence(
        origin=m["origin"], recorded_at=m["recorded_at"], reason=reason, message=m["message"], peer=m["peer"],
        old_size=m["old_size"], note=bytes(m["note"]), proof=proof, stored_note=bytes(m["stored_note"]),
    ))


class WitnessStore:
    """``witness_logs`` and ``witness_evidence`` (module docstring). Every method raises
    :class:`~gateway.errors.DatabaseError` when the database refuses or cannot be reached."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def migrate(self) -> None:
        """Bring the schema up to date (its own Alembic version table)."""
        await migrate(self._engine, MIGRATIONS, models.VERSION_TABLE)

    async def get(self, origin: str) -> LogState | None:
        """The state of ``origin``, or None when it was never cosigned."""
        async with transaction(self._engine.connect(), database_error=_database_error) as conn:
            row = (await conn.execute(sa.select(models.logs).where(models.logs.c.origin == origin))).first()
        return None if row is None else _state(row)

    async def logs(self) -> list[LogState]:
        """Every origin's state, by origin."""
        async with transaction(self._engine.connect(), database_error=_database_error) as conn:
            rows = (await conn.execute(sa.select(models.logs).order_by(models.logs.c.origin))).all()
        return [_state(r) for r in rows]

    async def compare_and_set(self, seen: LogState | None, new: LogState) -> bool:
        """Write ``new`` if the origin's row is still ``seen`` (same size and root hash; None: no row); return
        whether it was written (committed when this returns True)."""
        t = models.logs
        values = {"size": new.size, "root_hash": new.root_hash, "note": new.note, "updated_at": new.updated_at}
        try:
            async with transaction(self._engine.begin(), database_error=_database_error) as conn:
                if seen is None:
                    await conn.execute(sa.insert(t).values(origin=new.origin, **values))
                    return True
                result = await conn.execute(
                    sa.update(t).where(t.c.origin == new.origin, t.c.size == seen.size,
                                       t.c.root_hash == seen.root_hash).values(**values))
                return result.rowcount == 1
        except IntegrityError:  # another request inserted the origin's first row meanwhile
            return False

    async def add_evidence(self, evidence: Evidence) -> int | None:
        """Keep ``evidence``; its id, or None when the origin has :data:`MAX_EVIDENCE_PER_ORIGIN` rows already."""
        t = models.evidence
        async with transaction(self._engine.begin(), database_error=_database_error) as conn:
            count = (await conn.execute(sa.select(sa.func.count()).select_from(t)
                                        .where(t.c.origin == evidence.origin))).scalar_one()
            if count >= MAX_EVIDENCE_PER_ORIGIN:
                return None
            result = await conn.execute(sa.insert(t).values(
                origin=evidence.origin, recorded_at=evidence.recorded_at, reason=evidence.reason,
                message=evidence.message[:2048], peer=evidence.peer, old_size=evidence.old_size, note=evidence.note,
                proof="\n".join(base64.b64encode(h).decode("ascii") for h in evidence.proof),
                stored_note=evidence.stored_note,
            ).returning(t.c.id))
            return int(result.scalar_one())

    async def evidence(self, *, origin: str | None = None, limit: int = 100, offset: int = 0,
                       ) -> tuple[list[EvidenceRow], int]:
        """Kept evidence, newest first (only ``origin``'s if given), one page, and the total."""
        t = models.evidence
        where = [] if origin is None else [t.c.origin == origin]
        limit = max(0, min(limit, MAX_PAGE))
        async with transaction(self._engine.connect(), database_error=_database_error) as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(t).where(*where))).scalar_one()
            rows = (await conn.execute(sa.select(t).where(*where).order_by(t.c.id.desc())
                                       .limit(limit).offset(max(0, offset)))).all()
        return [_evidence(r) for r in rows], int(total)


__all__ = ["MAX_EVIDENCE_PER_ORIGIN", "EvidenceRow", "WitnessStore"]
