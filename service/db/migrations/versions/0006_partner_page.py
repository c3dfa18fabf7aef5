"""partner page: a page token hash per partner, and the feed token sealed under it

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partner") as batch_op:
        batch_op.add_column(sa.Column("page_token_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("page_token_created_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("feed_token_sealed", sa.String(length=120), nullable=True))
        batch_op.create_unique_constraint("uq_partner_page_token_hash", ["page_token_hash"])


def downgrade() -> None:
    with op.batch_alter_table("partner") as batch_op:
        batch_op.drop_constraint("uq_partner_page_token_hash", type_="unique")
        batch_op.drop_column("feed_token_sealed")
        batch_op.drop_column("page_token_created_at")
        batch_op.drop_column("page_token_hash")
