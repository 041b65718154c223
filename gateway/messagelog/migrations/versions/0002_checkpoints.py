"""Message log: signed checkpoints with their timestamps, and retention (pruned record bodies).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gateway.storage.schema import UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Retention removes the body of an exported record but keeps its row (seq, leaf hash), so that the
    # sequence stays dense and proofs over the tree still work: the record column becomes nullable.
    with op.batch_alter_table("messagelog_records") as batch:
        batch.alter_column("record", existing_type=sa.LargeBinary(), nullable=True)
    op.create_table(
        "messagelog_checkpoints",
        sa.Column("origin", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.LargeBinary(), nullable=False),
        sa.Column("signing_cert", sa.LargeBinary(), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.Column("created", UtcDateTime(), nullable=False),
        sa.Column("timestamp_token", sa.LargeBinary(), nullable=True),
        sa.Column("timestamp_time", UtcDateTime(), nullable=True),
        sa.Column("tsa_name", sa.String(255), nullable=True),
        sa.Column("tsa_cert", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("origin", "size", name=op.f("pk_messagelog_checkpoints")),
    )
    op.create_table(
        "messagelog_retention",
        sa.Column("origin", sa.String(255), nullable=False),
        sa.Column("pruned_before", sa.BigInteger(), nullable=False),
        sa.Column("pruned_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("origin", name=op.f("pk_messagelog_retention")),
    )


def downgrade() -> None:
    op.drop_table("messagelog_retention")
    op.drop_table("messagelog_checkpoints")
    with op.batch_alter_table("messagelog_records") as batch:
        batch.alter_column("record", existing_type=sa.LargeBinary(), nullable=False)
