"""The admin API's database schema (I/O description, no queries).

Tables (prefix ``adm_``), with their own Alembic script directory (``gateway/admin/migrations``) and version
table ``alembic_version_admin``. They live in the security server's database, so that several processes of
one server sharing PostgreSQL share users, keys, sessions and the audit log.

- ``adm_users``: local users: Argon2id hash, roles (comma-separated), consecutive failed logins, lock-out end,
  and ``sessions_valid_after`` (session tokens issued before it are refused: password change, removal).
- ``adm_api_keys``: public id, SHA-256 of the secret, roles, who created and who revoked it.
- ``adm_session_keys``: the ES256 keys that sign session tokens (``kid``, private key PEM, retirement time).
  The private keys are as sensitive as the database itself; see docs/admin-api.md.
- ``adm_revoked_tokens``: ids (``jti``) of session tokens ended by logout, kept until they would expire.
- ``adm_audit``: the audit log: when, who, how authenticated, from which address, which operation on which
  path, the result and its HTTP status, and details (request fields without secrets, the error message);
  each entry's sequence number ``seq`` (no gap, no duplicate) and its Merkle leaf hash
  (:mod:`gateway.admin.auditlog`).
- ``adm_audit_head``: one row (``id`` 1), the number of audit entries: the row every writer updates first
  in its transaction, which serialises writers (a row lock on PostgreSQL, the write lock on SQLite) and
  gives out ``seq``.
- ``adm_audit_checkpoints``: signed checkpoints of the audit log (origin ``<server id>/audit``), with the
  signing certificate, an OCSP response for it, the compact range of the tree and the RFC 3161 token.
- ``adm_audit_cosignatures``: witnesses' cosignatures (c2sp.org/tlog-cosignature) of those checkpoints.
"""

from __future__ import annotations

import sqlalchemy as sa

from gateway.storage.schema import UtcDateTime, new_metadata

VERSION_TABLE = "alembic_version_admin"

metadata = new_metadata()

ROLES_LENGTH = 256  # characters; all six role names joined by commas fit
PATH_LENGTH = 2048  # characters of a request path kept in the audit log

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite auto-increments INTEGER keys only

users = sa.Table(
    "adm_users",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(256), nullable=False),
    sa.Column("roles", sa.String(ROLES_LENGTH), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("failed_logins", sa.Integer(), nullable=False),
    sa.Column("locked_until", UtcDateTime(), nullable=True),
    sa.Column("sessions_valid_after", UtcDateTime(), nullable=True),
)

api_keys = sa.Table(
    "adm_api_keys",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("key_id", sa.String(16), nullable=False, unique=True),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("roles", sa.String(ROLES_LENGTH), nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.Column("revoked_by", sa.String(255), nullable=True),
)

session_keys = sa.Table(
    "adm_session_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("private_pem", sa.Text(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("retired_at", UtcDateTime(), nullable=True),
)

revoked_tokens = sa.Table(
    "adm_revoked_tokens",
    metadata,
    sa.Column("jti", sa.String(64), primary_key=True),
    sa.Column("expires_at", UtcDateTime(), nullable=False, index=True),
)

audit = sa.Table(
    "adm_audit",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False, index=True),
    sa.Column("auth", sa.String(16), nullable=False),
    sa.Column("remote", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False, index=True),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("path", sa.String(PATH_LENGTH), nullable=False),
    sa.Column("result", sa.String(16), nullable=False),
    sa.Column("status", sa.Integer(), nullable=False),
    sa.Column("details", sa.Text(), nullable=False),
    sa.Column("seq", BigId, nullable=False, unique=True),
    sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
)

audit_head = sa.Table(
    "adm_audit_head",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
)

audit_checkpoints = sa.Table(
    "adm_audit_checkpoints",
    metadata,
    sa.Column("size", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("note", sa.LargeBinary(), nullable=False),
    sa.Column("signing_cert", sa.LargeBinary(), nullable=False),
    sa.Column("signing_ocsp", sa.LargeBinary(), nullable=True),
    sa.Column("frontier", sa.LargeBinary(), nullable=False),  # the compact range's hashes, concatenated
    sa.Column("created", UtcDateTime(), nullable=False),
    sa.Column("timestamp_token", sa.LargeBinary(), nullable=True),
    sa.Column("timestamp_time", UtcDateTime(), nullable=True),
    sa.Column("tsa_name", sa.String(255), nullable=True),
)

audit_cosignatures = sa.Table(
    "adm_audit_cosignatures",
    metadata,
    sa.Column("size", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("witness", sa.String(255), primary_key=True),
    sa.Column("key_id", sa.LargeBinary(4), nullable=False),
    sa.Column("timestamp", sa.BigInteger(), nullable=False),  # POSIX seconds, as cosigned
    sa.Column("line", sa.Text(), nullable=False),  # the signature line, as received
)
