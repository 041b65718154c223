"""The operational-monitoring table (I/O description, no queries).

``opmon_records``: one row per exchange and side (:class:`gateway.opmon.record.OpRecord`), with a surrogate
key that orders rows written at the same time. Indexed on ``request_in`` (time ranges, paging newest first and
pruning) and on ``request_id`` (finding one exchange from a complaint).

Its own Alembic script directory (``gateway/opmon/migrations``) and version table ``alembic_version_opmon``.
"""

from __future__ import annotations

import sqlalchemy as sa

from gateway.storage.schema import UtcDateTime, new_metadata

VERSION_TABLE = "alembic_version_opmon"

metadata = new_metadata()

records = sa.Table(
    "opmon_records",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
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
    sa.Index("ix_opmon_records_request_in", "request_in"),
    sa.Index("ix_opmon_records_request_id", "request_id"),
)

__all__ = ["VERSION_TABLE", "metadata", "records"]
