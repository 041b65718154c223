"""Message log: record format version 2, whose records name their certificates and OCSP responses by SHA-256
(table ``messagelog_blobs``, once per log origin).

Version-1 records cannot be converted: their leaf hashes, and so the signed checkpoints over them, are of
their version-1 bytes. A database that holds any is refused with a message saying what to do
(docs/messagelog.md section 2).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gateway.errors import ConfigError

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    held = op.get_bind().scalar(sa.text("SELECT count(*) FROM messagelog_records"))
    if held:
        raise ConfigError(
            f"the message log database holds {held} records in format version 1, which this version does not "
            "read (docs/messagelog.md section 2)",
            hint="export them with `gateway log export` of the previous version and keep the archive, then "
                 "start this version with a new message log database",
        )
    op.create_table(
        "messagelog_blobs",
        sa.Column("origin", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("origin", "sha256", name=op.f("pk_messagelog_blobs")),
    )


def downgrade() -> None:
    op.drop_table("messagelog_blobs")
