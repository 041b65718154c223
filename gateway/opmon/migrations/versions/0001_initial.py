"""Operational monitoring: the records table.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
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
        "opmon_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("origin", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=True),
        sa.Column("request_id", sa.String(255), nullable=True),
        sa.Column("client", sa.String(1024), nullable=True),
        sa.Column("service", sa.String(1024), nullable=True),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("request_in", UtcDateTime(), nullable=False),
        sa.Column("request_out", UtcDateTime(), nullable=True),
        sa.Column("response_in", UtcDateTime(), nullable=True),
        sa.Column("response_out", UtcDateTime(), nullable=False),
        sa.Column("request_bytes", sa.BigInteger(), nullable=True),
        sa.Column("response_bytes", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("fault", sa.String(255), nullable=True),
        sa.Column("peer_server", sa.String(1024), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opmon_records")),
    )
    op.create_index("ix_opmon_records_request_in", "opmon_records", ["request_in"])
    op.create_index("ix_opmon_records_request_id", "opmon_records", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_opmon_records_request_id", table_name="opmon_records")
    op.drop_index("ix_opmon_records_request_in", table_name="opmon_records")
    op.drop_table("opmon_records")
