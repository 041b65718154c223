"""Message log: the replay key of provider-side request records, unique per server across its origins.

gateway.messagelog.store.replay: one request id is logged once by a server, whichever of its workers or nodes
received it. Records written before this revision have no key (NULL); the in-process replay caches covered
them, and a request older than the replay window (``[server] replay_window_seconds``) is refused anyway.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messagelog_records") as batch:
        batch.add_column(sa.Column("replay_key", sa.LargeBinary(32), nullable=True))
    op.create_index(
        "ux_messagelog_records_replay_key", "messagelog_records", ["replay_key"], unique=True,
        sqlite_where=sa.text("replay_key IS NOT NULL"), postgresql_where=sa.text("replay_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ux_messagelog_records_replay_key", table_name="messagelog_records")
    with op.batch_alter_table("messagelog_records") as batch:
        batch.drop_column("replay_key")
