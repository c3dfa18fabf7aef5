"""early_receipt: delivery receipts that arrive before their send is recorded

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "early_receipt",
        sa.Column("sid", sa.String(length=120), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("error", sa.String(length=300), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sid"),
    )
    with op.batch_alter_table("early_receipt") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_early_receipt_received_at"), ["received_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("early_receipt") as batch_op:
        batch_op.drop_index(batch_op.f("ix_early_receipt_received_at"))
    op.drop_table("early_receipt")
