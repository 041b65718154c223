"""Admin: the audit log as a Merkle log (sequence numbers, leaf hashes, tree head, checkpoints, cosignatures).

Entries written before this revision get their sequence numbers in ``id`` order and their leaf hashes
(encoding version 1 of :mod:`gateway.admin.auditlog`) here, so the tree starts with them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gateway.admin.auditlog import EntryFields, entry_leaf
from gateway.storage.schema import UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_BATCH = 1000  # rows per read while numbering the existing entries


def _number_existing() -> int:
    bind = op.get_bind()
    audit = sa.table(
        "adm_audit", sa.column("id", sa.BigInteger()), sa.column("at", UtcDateTime()),
        *(sa.column(c, sa.String()) for c in ("actor", "auth", "remote", "action", "method", "path", "result")),
        sa.column("status", sa.Integer()), sa.column("details", sa.Text()), sa.column("seq", sa.BigInteger()),
        sa.column("leaf_hash", sa.LargeBinary()),
    )
    seq, last_id = 0, None
    while True:
        q = sa.select(audit).order_by(audit.c.id).limit(_BATCH)
        if last_id is not None:
            q = q.where(audit.c.id > last_id)
        rows = bind.execute(q).fetchall()
        if not rows:
            return seq
        for r in rows:
            leaf = entry_leaf(EntryFields(
                seq=seq, at=r.at, actor=r.actor, auth=r.auth, remote=r.remote, action=r.action, method=r.method,
                path=r.path, result=r.result, status=int(r.status), details=r.details,
            ))
            bind.execute(audit.update().where(audit.c.id == r.id).values(seq=seq, leaf_hash=leaf))
            seq += 1
            last_id = r.id


def upgrade() -> None:
    with op.batch_alter_table("adm_audit") as batch:
        batch.add_column(sa.Column("seq", _BIG, nullable=True))
        batch.add_column(sa.Column("leaf_hash", sa.LargeBinary(32), nullable=True))
    size = _number_existing()
    with op.batch_alter_table("adm_audit") as batch:
        batch.alter_column("seq", existing_type=_BIG, nullable=False)
        batch.alter_column("leaf_hash", existing_type=sa.LargeBinary(32), nullable=False)
        batch.create_unique_constraint(op.f("uq_adm_audit_seq"), ["seq"])
    op.create_table(
        "adm_audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adm_audit_head")),
    )
    op.get_bind().execute(sa.text("INSERT INTO adm_audit_head (id, size) VALUES (1, :size)"), {"size": size})
    op.create_table(
        "adm_audit_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.LargeBinary(), nullable=False),
        sa.Column("signing_cert", sa.LargeBinary(), nullable=False),
        sa.Column("signing_ocsp", sa.LargeBinary(), nullable=True),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.Column("created", UtcDateTime(), nullable=False),
        sa.Column("timestamp_token", sa.LargeBinary(), nullable=True),
        sa.Column("timestamp_time", UtcDateTime(), nullable=True),
        sa.Column("tsa_name", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_adm_audit_checkpoints")),
    )
    op.create_table(
        "adm_audit_cosignatures",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("witness", sa.String(255), nullable=False),
        sa.Column("key_id", sa.LargeBinary(4), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("size", "witness", name=op.f("pk_adm_audit_cosignatures")),
    )


def downgrade() -> None:
    op.drop_table("adm_audit_cosignatures")
    op.drop_table("adm_audit_checkpoints")
    op.drop_table("adm_audit_head")
    with op.batch_alter_table("adm_audit") as batch:
        batch.drop_constraint(op.f("uq_adm_audit_seq"), type_="unique")
        batch.drop_column("leaf_hash")
        batch.drop_column("seq")
