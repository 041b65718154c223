"""Serverconf: initial schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sc_clients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client", sa.String(length=1024), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("is_auth", sa.String(length=16), nullable=False),
        sa.Column("body_logging", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sc_clients")),
        sa.UniqueConstraint("client", name=op.f("uq_sc_clients_client")),
    )
    op.create_table(
        "sc_local_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sc_local_groups")),
        sa.UniqueConstraint("code", name=op.f("uq_sc_local_groups_code")),
    )
    op.create_table(
        "sc_is_certs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("cert", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["sc_clients.id"],
            name=op.f("fk_sc_is_certs_client_id_sc_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sc_is_certs")),
        sa.UniqueConstraint("client_id", "fingerprint", name=op.f("uq_sc_is_certs_client_id_fingerprint")),
    )
    op.create_table(
        "sc_local_group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("client", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["sc_local_groups.id"],
            name=op.f("fk_sc_local_group_members_group_id_sc_local_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "client", name=op.f("pk_sc_local_group_members")),
    )
    op.create_table(
        "sc_services",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(length=1024), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=False),
        sa.Column("openapi_url", sa.String(length=2048), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_notice", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["sc_clients.id"],
            name=op.f("fk_sc_services_client_id_sc_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sc_services")),
        sa.UniqueConstraint("service", name=op.f("uq_sc_services_service")),
    )
    op.create_table(
        "sc_access_rights",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("subject_type", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["sc_services.id"],
            name=op.f("fk_sc_access_rights_service_id_sc_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sc_access_rights")),
        sa.UniqueConstraint(
            "service_id", "method", "path", "subject_type", "subject", name="uq_sc_access_rights"
        ),
    )
    op.create_table(
        "sc_endpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["sc_services.id"],
            name=op.f("fk_sc_endpoints_service_id_sc_services"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sc_endpoints")),
        sa.UniqueConstraint("service_id", "method", "path", name="uq_sc_endpoints"),
    )


def downgrade() -> None:
    op.drop_table("sc_endpoints")
    op.drop_table("sc_access_rights")
    op.drop_table("sc_services")
    op.drop_table("sc_local_group_members")
    op.drop_table("sc_is_certs")
    op.drop_table("sc_local_groups")
    op.drop_table("sc_clients")
