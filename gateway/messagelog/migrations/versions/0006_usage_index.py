"""Message log: the transparency blind index (docs/transparency.md section 3).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gateway.storage.schema import UtcDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "messagelog_usage_index",
        sa.Column("subject_index", sa.LargeBinary(32), nullable=False),
        sa.Column("origin", sa.String(255), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("salt", sa.LargeBinary(32), nullable=False),
        sa.Column("created", UtcDateTime(), nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("client", sa.String(1024), nullable=False),
        sa.Column("provider", sa.String(1024), nullable=False),
        sa.Column("embargo_until", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("subject_index", "origin", "seq", name=op.f("pk_messagelog_usage_index")),
    )
    op.create_index("ix_messagelog_usage_index_created", "messagelog_usage_index", ["subject_index", "created"])


def downgrade() -> None:
    op.drop_index("ix_messagelog_usage_index_created", table_name="messagelog_usage_index")
    op.drop_table("messagelog_usage_index")
