"""The central server's database schema: SQLAlchemy 2 declarative models (I/O description, no queries).

One metadata object for the central server, with its own Alembic script directory
(``gateway/central/migrations``) and version table ``alembic_version_central``. The schema works on SQLite
and PostgreSQL; constraint names follow the shared naming convention (``gateway.storage.schema``) so that
migrations can refer to them.

Identifiers are stored split into their parts (``instance``, ``member_class``, ...), as X-Road's central
server does, and each client reference (server client, global-group member) also keeps its ``/``-joined
string form in a ``client`` column so that "one row per client" is a plain unique constraint on both
backends (a nullable subsystem foreign key cannot be part of a portable unique key).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gateway.storage.schema import UtcDateTime, new_metadata

KeyState = Literal["inactive", "active", "retired"]
RequestState = Literal["submitted", "approved", "rejected", "revoked"]
RequestKind = Literal["auth_cert_reg", "auth_cert_deletion", "client_reg", "client_deletion"]


class Base(DeclarativeBase):
    metadata = new_metadata()


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (sa.UniqueConstraint("instance", "member_class", "member_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    instance: Mapped[str] = mapped_column(sa.String(255))
    member_class: Mapped[str] = mapped_column(sa.String(255))
    member_code: Mapped[str] = mapped_column(sa.String(255))
    name: Mapped[str] = mapped_column(sa.String(1024))


class Subsystem(Base):
    __tablename__ = "subsystems"
    __table_args__ = (sa.UniqueConstraint("member_id", "subsystem_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    subsystem_code: Mapped[str] = mapped_column(sa.String(255))


class SecurityServer(Base):
    __tablename__ = "security_servers"
    __table_args__ = (sa.UniqueConstraint("owner_id", "server_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    server_code: Mapped[str] = mapped_column(sa.String(255))
    address: Mapped[str] = mapped_column(sa.String(1024))


class AuthCert(Base):
    __tablename__ = "auth_certs"

    id: Mapped[int] = mapped_column(primary_key=True)
    server_id: Mapped[int] = mapped_column(
        sa.ForeignKey("security_servers.id", ondelete="CASCADE"), index=True
    )
    sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)  # hex SHA-256 of the DER certificate
    certificate_pem: Mapped[str] = mapped_column(sa.Text)


class ServerClient(Base):
    __tablename__ = "server_clients"
    __table_args__ = (sa.UniqueConstraint("server_id", "client"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    server_id: Mapped[int] = mapped_column(
        sa.ForeignKey("security_servers.id", ondelete="CASCADE"), index=True
    )
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    subsystem_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("subsystems.id", ondelete="CASCADE"), index=True
    )
    client: Mapped[str] = mapped_column(sa.String(1024))  # the /-joined identifier


class GlobalGroup(Base):
    __tablename__ = "global_groups"
    __table_args__ = (sa.UniqueConstraint("instance", "group_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    instance: Mapped[str] = mapped_column(sa.String(255))
    group_code: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str] = mapped_column(sa.String(1024))


class GlobalGroupMember(Base):
    __tablename__ = "global_group_members"
    __table_args__ = (sa.UniqueConstraint("group_id", "client"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(sa.ForeignKey("global_groups.id", ondelete="CASCADE"), index=True)
    member_id: Mapped[int] = mapped_column(sa.ForeignKey("members.id", ondelete="CASCADE"), index=True)
    subsystem_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("subsystems.id", ondelete="CASCADE"), index=True
    )
    client: Mapped[str] = mapped_column(sa.String(1024))


class TrustedCa(Base):
    __tablename__ = "trusted_cas"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255), unique=True)
    certificate_pem: Mapped[str] = mapped_column(sa.Text)
    ocsp_urls: Mapped[list[str]] = mapped_column(sa.JSON)  # in order of preference


class Tsa(Base):
    __tablename__ = "tsas"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255), unique=True)
    url: Mapped[str] = mapped_column(sa.String(2048))
    certificate_pem: Mapped[str] = mapped_column(sa.Text)


class TransparencyParams(Base):
    """The published transparency parameters (docs/transparency.md section 1): one row, id 1, once set (revision
    0003); without it the ``[central] transparency_*`` settings are published."""

    __tablename__ = "transparency_params"

    id: Mapped[int] = mapped_column(primary_key=True)
    purposes: Mapped[dict[str, str]] = mapped_column(sa.JSON)  # code -> text
    portal: Mapped[str | None] = mapped_column(sa.String(1024), nullable=True)
    embargo_clients: Mapped[list[str]] = mapped_column(sa.JSON)


class WitnessPolicy(Base):
    """Which witnesses must cosign the checkpoints of every log of one security server (docs/witness.md
    section 3; revision 0004). Removed with its server (``ON DELETE CASCADE``)."""

    __tablename__ = "witness_policies"

    id: Mapped[int] = mapped_column(primary_key=True)
    server_id: Mapped[int] = mapped_column(
        sa.ForeignKey("security_servers.id", ondelete="CASCADE"), unique=True
    )
    quorum: Mapped[int] = mapped_column()


class PolicyWitness(Base):
    """One witness of a policy: its C2SP vkey, its URL and the security server that runs it. The hosting
    server cannot be removed while a policy names it (``ON DELETE RESTRICT``; the registry says which)."""

    __tablename__ = "policy_witnesses"
    __table_args__ = (sa.UniqueConstraint("policy_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_id: Mapped[int] = mapped_column(
        sa.ForeignKey("witness_policies.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(255))  # the key name, as in the vkey
    vkey: Mapped[str] = mapped_column(sa.String(512))
    url: Mapped[str] = mapped_column(sa.String(2048))
    server_id: Mapped[int] = mapped_column(
        sa.ForeignKey("security_servers.id", ondelete="RESTRICT"), index=True
    )


class SigningKey(Base):
    __tablename__ = "signing_keys"
    __table_args__ = (sa.CheckConstraint("state IN ('inactive', 'active', 'retired')", name="state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(unique=True)  # N in "CN=<instance> configuration signing key N"
    keyid: Mapped[str] = mapped_column(sa.String(64), unique=True)  # hex SHA-256 of the DER certificate
    certificate_pem: Mapped[str] = mapped_column(sa.Text)
    key_path: Mapped[str] = mapped_column(sa.String(4096))  # PKCS#8 PEM file, mode 0600
    state: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Publication(Base):
    __tablename__ = "publications"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(sa.BigInteger, unique=True)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # SHA-256 of the canonical content without version/issued_at/expires_at: "did anything change?"
    content_sha256: Mapped[str] = mapped_column(sa.String(64))
    # SHA-256 of the signed envelope bytes as served (the HTTP ETag)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)


class RegistrationRequest(Base):
    """Management requests (X-Road's authCertReg, clientReg and deletions); the approval flow comes later.

    A request names the security server and, depending on ``kind``, an authentication certificate or a
    client. ``state`` moves submitted -> approved | rejected, approved -> revoked.
    """

    __tablename__ = "registration_requests"
    __table_args__ = (
        sa.CheckConstraint("state IN ('submitted', 'approved', 'rejected', 'revoked')", name="state"),
        sa.CheckConstraint(
            "kind IN ('auth_cert_reg', 'auth_cert_deletion', 'client_reg', 'client_deletion')", name="kind"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    server: Mapped[str] = mapped_column(sa.String(1024))  # the /-joined security server identifier
    client: Mapped[str | None] = mapped_column(sa.String(1024))
    auth_cert_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    auth_cert_pem: Mapped[str | None] = mapped_column(sa.Text)
    address: Mapped[str | None] = mapped_column(sa.String(1024))
    origin: Mapped[str | None] = mapped_column(sa.String(1024))  # who submitted it (remote address, user)
    comment: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    decided_by: Mapped[str | None] = mapped_column(sa.String(255))


metadata = Base.metadata
