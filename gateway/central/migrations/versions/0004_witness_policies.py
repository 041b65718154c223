"""Central: witness policies (docs/witness.md section 3).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "witness_policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("quorum", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"], ["security_servers.id"], name=op.f("fk_witness_policies_server_id_security_servers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_witness_policies")),
        sa.UniqueConstraint("server_id", name=op.f("uq_witness_policies_server_id")),
    )
    op.create_table(
        "policy_witnesses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("vkey", sa.String(length=512), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_id"], ["witness_policies.id"], name=op.f("fk_policy_witnesses_policy_id_witness_policies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["server_id"], ["security_servers.id"], name=op.f("fk_policy_witnesses_server_id_security_servers"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_witnesses")),
        sa.UniqueConstraint("policy_id", "name", name=op.f("uq_policy_witnesses_policy_id_name")),
    )
    op.create_index(op.f("ix_policy_witnesses_policy_id"), "policy_witnesses", ["policy_id"])
    op.create_index(op.f("ix_policy_witnesses_server_id"), "policy_witnesses", ["server_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_policy_witnesses_server_id"), table_name="policy_witnesses")
    op.drop_index(op.f("ix_policy_witnesses_policy_id"), table_name="policy_witnesses")
    op.drop_table("policy_witnesses")
    op.drop_table("witness_policies")
