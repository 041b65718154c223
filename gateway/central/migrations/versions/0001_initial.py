"""Central server: initial schema.

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


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "members",
        _id(),
        sa.Column("instance", sa.String(length=255), nullable=False),
        sa.Column("member_class", sa.String(length=255), nullable=False),
        sa.Column("member_code", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_members")),
        sa.UniqueConstraint(
            "instance", "member_class", "member_code",
            name=op.f("uq_members_instance_member_class_member_code"),
        ),
    )
    op.create_table(
        "subsystems",
        _id(),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("subsystem_code", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_subsystems_member_id_members"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subsystems")),
        sa.UniqueConstraint(
            "member_id", "subsystem_code", name=op.f("uq_subsystems_member_id_subsystem_code")
        ),
    )
    op.create_index(op.f("ix_subsystems_member_id"), "subsystems", ["member_id"])
    op.create_table(
        "security_servers",
        _id(),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("server_code", sa.String(length=255), nullable=False),
        sa.Column("address", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["members.id"], name=op.f("fk_security_servers_owner_id_members"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_servers")),
        sa.UniqueConstraint(
            "owner_id", "server_code", name=op.f("uq_security_servers_owner_id_server_code")
        ),
    )
    op.create_index(op.f("ix_security_servers_owner_id"), "security_servers", ["owner_id"])
    op.create_table(
        "auth_certs",
        _id(),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"], ["security_servers.id"], name=op.f("fk_auth_certs_server_id_security_servers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_certs")),
        sa.UniqueConstraint("sha256", name=op.f("uq_auth_certs_sha256")),
    )
    op.create_index(op.f("ix_auth_certs_server_id"), "auth_certs", ["server_id"])
    op.create_table(
        "server_clients",
        _id(),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("subsystem_id", sa.Integer(), nullable=True),
        sa.Column("client", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"], ["security_servers.id"], name=op.f("fk_server_clients_server_id_security_servers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_server_clients_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subsystem_id"], ["subsystems.id"], name=op.f("fk_server_clients_subsystem_id_subsystems"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_clients")),
        sa.UniqueConstraint("server_id", "client", name=op.f("uq_server_clients_server_id_client")),
    )
    op.create_index(op.f("ix_server_clients_server_id"), "server_clients", ["server_id"])
    op.create_index(op.f("ix_server_clients_member_id"), "server_clients", ["member_id"])
    op.create_index(op.f("ix_server_clients_subsystem_id"), "server_clients", ["subsystem_id"])
    op.create_table(
        "global_groups",
        _id(),
        sa.Column("instance", sa.String(length=255), nullable=False),
        sa.Column("group_code", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_global_groups")),
        sa.UniqueConstraint("instance", "group_code", name=op.f("uq_global_groups_instance_group_code")),
    )
    op.create_table(
        "global_group_members",
        _id(),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("subsystem_id", sa.Integer(), nullable=True),
        sa.Column("client", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["global_groups.id"], name=op.f("fk_global_group_members_group_id_global_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_global_group_members_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subsystem_id"], ["subsystems.id"], name=op.f("fk_global_group_members_subsystem_id_subsystems"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_global_group_members")),
        sa.UniqueConstraint("group_id", "client", name=op.f("uq_global_group_members_group_id_client")),
    )
    op.create_index(op.f("ix_global_group_members_group_id"), "global_group_members", ["group_id"])
    op.create_index(op.f("ix_global_group_members_member_id"), "global_group_members", ["member_id"])
    op.create_index(op.f("ix_global_group_members_subsystem_id"), "global_group_members", ["subsystem_id"])
    op.create_table(
        "trusted_cas",
        _id(),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("ocsp_urls", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trusted_cas")),
        sa.UniqueConstraint("name", name=op.f("uq_trusted_cas_name")),
    )
    op.create_table(
        "tsas",
        _id(),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tsas")),
        sa.UniqueConstraint("name", name=op.f("uq_tsas_name")),
    )
    op.create_table(
        "signing_keys",
        _id(),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("keyid", sa.String(length=64), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("key_path", sa.String(length=4096), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('active', 'retired')", name=op.f("ck_signing_keys_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signing_keys")),
        sa.UniqueConstraint("keyid", name=op.f("uq_signing_keys_keyid")),
        sa.UniqueConstraint("number", name=op.f("uq_signing_keys_number")),
    )
    op.create_table(
        "publications",
        _id(),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_publications")),
        sa.UniqueConstraint("version", name=op.f("uq_publications_version")),
    )
    op.create_table(
        "registration_requests",
        _id(),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("server", sa.String(length=1024), nullable=False),
        sa.Column("client", sa.String(length=1024), nullable=True),
        sa.Column("auth_cert_sha256", sa.String(length=64), nullable=True),
        sa.Column("auth_cert_pem", sa.Text(), nullable=True),
        sa.Column("address", sa.String(length=1024), nullable=True),
        sa.Column("origin", sa.String(length=1024), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=255), nullable=True),
        sa.CheckConstraint(
            "kind IN ('auth_cert_reg', 'auth_cert_deletion', 'client_reg', 'client_deletion')",
            name=op.f("ck_registration_requests_kind"),
        ),
        sa.CheckConstraint(
            "state IN ('submitted', 'approved', 'rejected', 'revoked')",
            name=op.f("ck_registration_requests_state"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registration_requests")),
    )
    op.create_index(op.f("ix_registration_requests_state"), "registration_requests", ["state"])


def downgrade() -> None:
    for table in (
        "registration_requests", "publications", "signing_keys", "tsas", "trusted_cas",
        "global_group_members", "global_groups", "server_clients", "auth_certs", "security_servers",
        "subsystems", "members",
    ):
        op.drop_table(table)
