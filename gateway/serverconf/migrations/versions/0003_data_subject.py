"""Serverconf: a service's data-subject declaration and purpose requirement (docs/transparency.md section 2).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sc_services") as batch:
        batch.add_column(sa.Column("data_subject", sa.String(255), nullable=True))
        batch.add_column(sa.Column("subject_mismatch", sa.String(16), nullable=False, server_default="refuse"))
        batch.add_column(sa.Column("purpose_required", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("sc_services") as batch:
        batch.drop_column("purpose_required")
        batch.drop_column("subject_mismatch")
        batch.drop_column("data_subject")
