"""Central server: a configuration-signing key may be ``inactive`` (generated, listed in the anchor, not
signing yet) before it is activated; rollover is generate, hand out the anchor, activate, retire.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("signing_keys") as batch:
        batch.drop_constraint(op.f("ck_signing_keys_state"), type_="check")
        batch.create_check_constraint("state", "state IN ('inactive', 'active', 'retired')")


def downgrade() -> None:
    op.execute("UPDATE signing_keys SET state = 'retired' WHERE state = 'inactive'")
    with op.batch_alter_table("signing_keys") as batch:
        batch.drop_constraint(op.f("ck_signing_keys_state"), type_="check")
        batch.create_check_constraint("state", "state IN ('active', 'retired')")
