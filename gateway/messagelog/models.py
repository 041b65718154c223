"""The message log's database schema (I/O description, no queries).

``messagelog_records``: one row per logged message, keyed by ``(origin, seq)`` where ``seq`` is dense and
gap-free per origin (0, 1, 2, ...), the record's index in its origin's Merkle tree. ``record`` holds the
canonical encoding (``gateway.messagelog.record``), which is the only thing hashed and verified; the other
columns copy fields out of it for lookups and are never trusted by a verifier. ``messagelog_blobs`` (revision
0003): the certificates and OCSP responses that records name, once per origin, keyed by their SHA-256.
``messagelog_bodies`` (revision 0005): large bodies stored apart from their records, in chunks.
``messagelog_cosignatures`` (revision 0007): the witnesses' cosignatures of checkpoints (docs/witness.md).

Its own Alembic script directory (``gateway/messagelog/migrations``) and version table
``alembic_version_messagelog``, so the message log can live in the serverconf database or in its own.
"""

from __future__ import annotations

import sqlalchemy as sa

from gateway.storage.schema import UtcDateTime, new_metadata

VERSION_TABLE = "alembic_version_messagelog"

metadata = new_metadata()

records = sa.Table(
    "messagelog_records",
    metadata,
    sa.Column("origin", sa.String(255), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("created", UtcDateTime(), nullable=False),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("request_id", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("side", sa.String(16), nullable=False),
    sa.Column("client", sa.String(1024), nullable=False),
    sa.Column("service", sa.String(1024), nullable=False),
    sa.Column("record", sa.LargeBinary(), nullable=True),  # NULL once pruned (retention, revision 0002)
    sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
    sa.PrimaryKeyConstraint("origin", "seq"),
    sa.Index("ix_messagelog_records_message_id", "message_id"),
    sa.Index("ix_messagelog_records_request_id", "request_id"),
    # Revision 0004: a provider's request records, one per request id of the server across all its origins
    # (gateway.messagelog.store.replay); NULL on every other record.
    sa.Column("replay_key", sa.LargeBinary(32), nullable=True),
    sa.Index("ux_messagelog_records_replay_key", "replay_key", unique=True,
             sqlite_where=sa.text("replay_key IS NOT NULL"), postgresql_where=sa.text("replay_key IS NOT NULL")),
    # Revision 0005: the body of a record whose body is stored apart (messagelog_bodies), and its size in bytes;
    # the record column then holds the encoding with "body":null. NULL on every other record.
    sa.Column("body_ref", sa.String(64), nullable=True),
    sa.Column("body_size", sa.BigInteger(), nullable=True),
)


# Revision 0002: signed checkpoints (gateway.messagelog.checkpoint) and retention.
checkpoints = sa.Table(
    "messagelog_checkpoints",
    metadata,
    sa.Column("origin", sa.String(255), nullable=False),  # the log origin (records' origin), not the note's
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("note", sa.LargeBinary(), nullable=False),  # the signed note, exactly as signed and timestamped
    sa.Column("signing_cert", sa.LargeBinary(), nullable=False),  # DER of the certificate of the signing key
    sa.Column("frontier", sa.LargeBinary(), nullable=False),  # compact range at size: 32-byte hashes, concatenated
    sa.Column("created", UtcDateTime(), nullable=False),
    sa.Column("timestamp_token", sa.LargeBinary(), nullable=True),  # RFC 3161 token over SHA-256(note)
    sa.Column("timestamp_time", UtcDateTime(), nullable=True),  # the token's genTime
    sa.Column("tsa_name", sa.String(255), nullable=True),
    sa.Column("tsa_cert", sa.LargeBinary(), nullable=True),  # DER
    sa.PrimaryKeyConstraint("origin", "size"),
)

retention = sa.Table(
    "messagelog_retention",
    metadata,
    sa.Column("origin", sa.String(255), nullable=False),
    sa.Column("pruned_before", sa.BigInteger(), nullable=False),  # bodies of seq < this are removed
    sa.Column("pruned_at", UtcDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("origin"),
)


# Revision 0005: bodies stored apart from their records, in chunks of at most BODY_CHUNK_BYTES, numbered from 0;
# committed before the record that names them (gateway.messagelog.store.base.MessageLogStore.append_body_apart).
bodies = sa.Table(
    "messagelog_bodies",
    metadata,
    sa.Column("body_id", sa.String(64), nullable=False),  # random hex, named by the record's body_ref
    sa.Column("n", sa.Integer(), nullable=False),
    sa.Column("data", sa.LargeBinary(), nullable=False),  # the body's bytes, as received (not base64)
    sa.PrimaryKeyConstraint("body_id", "n"),
)


# Revision 0003: the blobs that version-2 records name (stapled certificates and OCSP responses), once per log
# origin, written in the transaction of the first record that names each.
blobs = sa.Table(
    "messagelog_blobs",
    metadata,
    sa.Column("origin", sa.String(255), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),  # lower-case hex SHA-256 of data: the blob's name
    sa.Column("data", sa.LargeBinary(), nullable=False),  # DER
    sa.PrimaryKeyConstraint("origin", "sha256"),
)


# Revision 0006: the transparency blind index (docs/transparency.md section 3): one row per subject of a usage
# record, found by the keyed HMAC of the subject, with the salt of its commitment. Kept by the agency beside the
# log and never exported: archives and checkpoints hold only the commitments.
usage_index = sa.Table(
    "messagelog_usage_index",
    metadata,
    sa.Column("subject_index", sa.LargeBinary(32), nullable=False),  # HMAC-SHA256(server key, subject)
    sa.Column("origin", sa.String(255), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),  # the usage record's index in its origin's tree
    sa.Column("salt", sa.LargeBinary(32), nullable=False),
    sa.Column("created", UtcDateTime(), nullable=False),
    sa.Column("side", sa.String(16), nullable=False),  # client: access record; server: disclosure record
    sa.Column("client", sa.String(1024), nullable=False),
    sa.Column("provider", sa.String(1024), nullable=False),  # the service's subsystem
    sa.Column("embargo_until", UtcDateTime(), nullable=True),
    sa.PrimaryKeyConstraint("subject_index", "origin", "seq"),
    sa.Index("ix_messagelog_usage_index_created", "subject_index", "created"),
)


# Revision 0007: the cosignatures that witnesses gave a checkpoint (c2sp.org/tlog-cosignature@v1.0.1), verified
# against the witness policy's key before they are stored (gateway.witness.pusher); one row per witness key.
cosignatures = sa.Table(
    "messagelog_cosignatures",
    metadata,
    sa.Column("origin", sa.String(255), nullable=False),  # the log origin, as messagelog_checkpoints.origin
    sa.Column("size", sa.BigInteger(), nullable=False),  # the checkpoint's size
    sa.Column("witness", sa.String(255), nullable=False),  # the witness's key name
    sa.Column("key_id", sa.LargeBinary(4), nullable=False),
    sa.Column("timestamp", sa.BigInteger(), nullable=False),  # POSIX seconds, as cosigned
    sa.Column("line", sa.LargeBinary(), nullable=False),  # the signature line, exactly as received
    sa.PrimaryKeyConstraint("origin", "size", "witness", "key_id"),
)
