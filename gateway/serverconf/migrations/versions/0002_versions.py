"""Serverconf: change counters (``sc_versions``) that every process of a server polls to reload.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "sc_versions",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sc_versions")),
    )
    op.bulk_insert(table, [{"name": "serverconf", "version": 0}, {"name": "keys", "version": 0}])


def downgrade() -> None:
    op.drop_table("sc_versions")
