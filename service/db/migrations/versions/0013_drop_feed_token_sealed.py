"""drop partner.feed_token_sealed: the feed token sealed under the page token

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

The page shows the feed token kept under the encryption keys (partner.feed_token_kept,
service/calendar/feed_keep.py), on any page link; the copy sealed under one page link is
no longer read. A partner whose feed token was only in that copy gets a new calendar link
from their page. A downgrade brings the column back empty (the page offers a new link).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partner") as batch_op:
        batch_op.drop_column("feed_token_sealed")


def downgrade() -> None:
    with op.batch_alter_table("partner") as batch_op:
        batch_op.add_column(sa.Column("feed_token_sealed", sa.String(length=120), nullable=True))
