"""Message log: bodies stored apart from their records, in chunks (large bodies, streamed).

``messagelog_bodies`` holds a body as rows of at most ``BODY_CHUNK_BYTES`` (gateway.messagelog.store.base),
keyed by the body's id and the chunk's number; ``messagelog_records.body_ref`` names the body of a record whose
body is stored apart (its ``record`` then holds the encoding with ``"body":null``, while its ``leaf_hash`` is
that of the encoding with the body, as for any record: docs/messagelog.md section 2), and ``body_size`` its
size in bytes. Both are NULL on every other record, so records written before this revision read as before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "messagelog_bodies",
        sa.Column("body_id", sa.String(64), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("body_id", "n"),
    )
    with op.batch_alter_table("messagelog_records") as batch:
        batch.add_column(sa.Column("body_ref", sa.String(64), nullable=True))
        batch.add_column(sa.Column("body_size", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messagelog_records") as batch:
        batch.drop_column("body_size")
        batch.drop_column("body_ref")
    op.drop_table("messagelog_bodies")
