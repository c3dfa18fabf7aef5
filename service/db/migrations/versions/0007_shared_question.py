"""the shared question: ritual.ask, answers (sealed text, mood, reveal)

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ritual") as batch_op:
        batch_op.add_column(
            sa.Column("ask", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "answer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("couple_id", sa.Integer(), nullable=False),
        sa.Column("ritual_id", sa.Integer(), nullable=False),
        sa.Column("occurrence_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("mood", sa.Integer(), nullable=True),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revealed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["couple_id"], ["couple.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["partner_id"], ["partner.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["ritual_id"], ["ritual.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ritual_id", "occurrence_start", "partner_id"),
    )
    op.create_index("ix_answer_couple_id", "answer", ["couple_id"])
    op.create_index("ix_answer_answered_at", "answer", ["answered_at"])


def downgrade() -> None:
    op.drop_index("ix_answer_answered_at", table_name="answer")
    op.drop_index("ix_answer_couple_id", table_name="answer")
    op.drop_table("answer")
    with op.batch_alter_table("ritual") as batch_op:
        batch_op.drop_column("ask")
