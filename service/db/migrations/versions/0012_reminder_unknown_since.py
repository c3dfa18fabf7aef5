"""reminder.unknown_since: a send whose outcome is unknown, to be settled with the provider

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows 'sending' at upgrade time were left by a process that may have sent them: they
    # are settled with the provider when their lease runs out, as any stale claim is.
    with op.batch_alter_table("reminder") as batch_op:
        batch_op.add_column(sa.Column("unknown_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reminder") as batch_op:
        batch_op.drop_column("unknown_since")
