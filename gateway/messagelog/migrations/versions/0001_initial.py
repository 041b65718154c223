"""Message log: initial schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gateway.storage.schema import UtcDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "messagelog_records",
        sa.Column("origin", sa.String(255), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("created", UtcDateTime(), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("request_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("client", sa.String(1024), nullable=False),
        sa.Column("service", sa.String(1024), nullable=False),
        sa.Column("record", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("origin", "seq", name=op.f("pk_messagelog_records")),
    )
    op.create_index("ix_messagelog_records_message_id", "messagelog_records", ["message_id"])
    op.create_index("ix_messagelog_records_request_id", "messagelog_records", ["request_id"])


def downgrade() -> None:
    op.drop_table("messagelog_records")
