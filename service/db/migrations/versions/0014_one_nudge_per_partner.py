"""one nudge per partner: a partner's channels are an order of preference

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

``partner.both_channels`` (false: the first channel that can deliver takes the nudge, the next
only when it cannot) and ``reminder.standby`` (a planned fallback row, sent only when the
preferred channel's row could not deliver). Existing couples keep working without a data
migration: the send-time route check (service/outbox/fallback.py) reads the partner's current
order, so an existing email row planned beside an SMS row waits for the SMS and is dropped when
that was sent.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partner") as b:
        b.add_column(
            sa.Column("both_channels", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("reminder") as b:
        b.add_column(sa.Column("standby", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("reminder") as b:
        b.drop_column("standby")
    with op.batch_alter_table("partner") as b:
        b.drop_column("both_channels")
