"""partner.language: the language a partner reads Hearth in (en, de, es)

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing partners keep reading English, which is all Hearth spoke before.
    with op.batch_alter_table("partner") as batch_op:
        batch_op.add_column(
            sa.Column("language", sa.String(length=8), nullable=False, server_default="en")
        )


def downgrade() -> None:
    with op.batch_alter_table("partner") as batch_op:
        batch_op.drop_column("language")
