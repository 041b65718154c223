"""The witness's tables (I/O description, no queries; docs/witness.md section 1).

- ``witness_logs``: one row per checkpoint origin this witness has cosigned: the size, root hash and signed
  note of the largest consistent checkpoint it cosigned, and when.
- ``witness_evidence``: refused requests that show a fork (same size, another root) or an inconsistent history
  (a consistency proof that fails): both signed notes, the proof, who sent it, when.

Its own Alembic script directory (``gateway/witness/migrations``) and version table ``alembic_version_witness``,
in the security server's database: the state belongs to the witness, not to the message log or serverconf, and
a server with the witness switched off never needs it.
"""

from __future__ import annotations

import sqlalchemy as sa

from gateway.storage.schema import UtcDateTime, new_metadata

VERSION_TABLE = "alembic_version_witness"
MAX_ORIGIN_CHARS = 512  # a log origin (255) + "/messagelog", with room

metadata = new_metadata()

logs = sa.Table(
    "witness_logs",
    metadata,
    sa.Column("origin", sa.String(MAX_ORIGIN_CHARS), primary_key=True),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("note", sa.LargeBinary(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

evidence = sa.Table(
    "witness_evidence",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("origin", sa.String(MAX_ORIGIN_CHARS), nullable=False),
    sa.Column("recorded_at", UtcDateTime(), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("message", sa.String(2048), nullable=False),
    sa.Column("peer", sa.String(1024), nullable=False),
    sa.Column("old_size", sa.BigInteger(), nullable=False),
    sa.Column("note", sa.LargeBinary(), nullable=False),
    sa.Column("proof", sa.Text(), nullable=False),  # base64 hashes, one per line
    sa.Column("stored_note", sa.LargeBinary(), nullable=False),
    sa.Index("ix_witness_evidence_origin", "origin"),
)

__all__ = ["VERSION_TABLE", "evidence", "logs", "metadata"]
