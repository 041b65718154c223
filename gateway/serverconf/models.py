"""Serverconf's database schema (I/O description, no queries).

Tables (prefix ``sc_``), with their own Alembic script directory (``gateway/serverconf/migrations``) and
version table ``alembic_version_serverconf``:

- ``sc_clients``: members and subsystems hosted here, their status, IS authentication mode and body-logging
  flag; ``sc_is_certs``: the information systems' TLS certificates registered per client.
- ``sc_services``: REST services of hosted subsystems (base URL, timeout, OpenAPI URL, enabled);
  ``sc_endpoints``: each service's endpoints (method + path) as listed by ``listMethods``.
- ``sc_access_rights``: (service, endpoint method + path pattern, subject type + id); a right to the whole
  service is stored as X-Road's base endpoint ``*`` ``**``, so that every column is NOT NULL and "no
  duplicate right" is a plain unique constraint on both backends.
- ``sc_local_groups`` and ``sc_local_group_members``.
- ``sc_versions`` (revision 0002): change counters, one row each: ``serverconf`` (every change of the tables
  above) and ``keys`` (a change of the token's keys or certificates); every process of the server polls them.

Identifiers are stored in their ``/``-joined string form, which round-trips (``gateway.identifiers``).
Deleting a client deletes its services, their endpoints and access rights (ON DELETE CASCADE).
"""

from __future__ import annotations

import sqlalchemy as sa

from gateway.storage.schema import new_metadata

VERSION_TABLE = "alembic_version_serverconf"

metadata = new_metadata()


def _fk(target: str) -> sa.ForeignKey:
    return sa.ForeignKey(target, ondelete="CASCADE")

ID_LENGTH = 1024  # characters; gateway.identifiers.MAX_IDENTIFIER_LENGTH
URL_LENGTH = 2048  # characters
PATTERN_LENGTH = 1024  # characters; gateway.serverconf.access.MAX_PATH_PATTERN_LENGTH

clients = sa.Table(
    "sc_clients",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("client", sa.String(ID_LENGTH), nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("is_auth", sa.String(16), nullable=False),
    sa.Column("body_logging", sa.Boolean(), nullable=False),
)

is_certs = sa.Table(
    "sc_is_certs",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("client_id", sa.Integer(), _fk("sc_clients.id"), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),  # SHA-256 of the DER, lower-case hex
    sa.Column("cert", sa.LargeBinary(), nullable=False),  # DER
    sa.UniqueConstraint("client_id", "fingerprint"),
)

services = sa.Table(
    "sc_services",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("client_id", sa.Integer(), _fk("sc_clients.id"), nullable=False),
    sa.Column("service", sa.String(ID_LENGTH), nullable=False, unique=True),
    sa.Column("url", sa.String(URL_LENGTH), nullable=False),
    sa.Column("timeout_seconds", sa.Float(), nullable=False),
    sa.Column("openapi_url", sa.String(URL_LENGTH), nullable=True),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("disabled_notice", sa.String(1024), nullable=False),
    # Revision 0003 (docs/transparency.md section 2): where requests carry their data subject (path:N, query:NAME,
    # json:POINTER; NULL: nowhere declared), refuse or flag a mismatch, whether X-Road-Purpose is required
    sa.Column("data_subject", sa.String(255), nullable=True),
    sa.Column("subject_mismatch", sa.String(16), nullable=False, server_default="refuse"),
    sa.Column("purpose_required", sa.Boolean(), nullable=False, server_default=sa.false()),
)

endpoints = sa.Table(
    "sc_endpoints",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("service_id", sa.Integer(), _fk("sc_services.id"), nullable=False),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("path", sa.String(PATTERN_LENGTH), nullable=False),
    sa.UniqueConstraint("service_id", "method", "path", name="uq_sc_endpoints"),
)

access_rights = sa.Table(
    "sc_access_rights",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("service_id", sa.Integer(), _fk("sc_services.id"), nullable=False),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("path", sa.String(PATTERN_LENGTH), nullable=False),
    sa.Column("subject_type", sa.String(16), nullable=False),  # MEMBER, SUBSYSTEM, GLOBALGROUP, LOCALGROUP
    sa.Column("subject", sa.String(ID_LENGTH), nullable=False),
    sa.UniqueConstraint(
        "service_id", "method", "path", "subject_type", "subject", name="uq_sc_access_rights"
    ),
)

local_groups = sa.Table(
    "sc_local_groups",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("code", sa.String(255), nullable=False, unique=True),
    sa.Column("description", sa.String(1024), nullable=False),
)

local_group_members = sa.Table(
    "sc_local_group_members",
    metadata,
    sa.Column("group_id", sa.Integer(), _fk("sc_local_groups.id"), nullable=False),
    sa.Column("client", sa.String(ID_LENGTH), nullable=False),
    sa.PrimaryKeyConstraint("group_id", "client"),
)


# Revision 0002: change counters that every process of the server (workers, nodes) polls.
SERVERCONF_VERSION = "serverconf"
KEYS_VERSION = "keys"
versions = sa.Table(
    "sc_versions",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("version", sa.BigInteger(), nullable=False),
)
