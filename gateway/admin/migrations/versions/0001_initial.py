"""Admin API: users, API keys, session signing keys, revoked session tokens, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "adm_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("roles", sa.String(length=256), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", _TIME, nullable=True),
        sa.Column("sessions_valid_after", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adm_users")),
        sa.UniqueConstraint("username", name=op.f("uq_adm_users_username")),
    )
    op.create_table(
        "adm_api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("roles", sa.String(length=256), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.Column("revoked_by", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adm_api_keys")),
        sa.UniqueConstraint("key_id", name=op.f("uq_adm_api_keys_key_id")),
    )
    op.create_table(
        "adm_session_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("private_pem", sa.Text(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("retired_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_adm_session_keys")),
    )
    op.create_table(
        "adm_revoked_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_adm_revoked_tokens")),
    )
    op.create_index(op.f("ix_adm_revoked_tokens_expires_at"), "adm_revoked_tokens", ["expires_at"])
    op.create_table(
        "adm_audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("auth", sa.String(length=16), nullable=False),
        sa.Column("remote", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=2048), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adm_audit")),
    )
    op.create_index(op.f("ix_adm_audit_actor"), "adm_audit", ["actor"])
    op.create_index(op.f("ix_adm_audit_action"), "adm_audit", ["action"])


def downgrade() -> None:
    op.drop_table("adm_audit")
    op.drop_table("adm_revoked_tokens")
    op.drop_table("adm_session_keys")
    op.drop_table("adm_api_keys")
    op.drop_table("adm_users")
