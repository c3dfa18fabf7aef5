"""page grants: an email's single-use, expiring way to the partner's page; AEAD-sealed feed

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

An email's footer used to open the partner's page by the unsubscribe token, which never
expired: a forwarded email was a lasting key. Each email now carries its own grant (only the
hash is stored here). The feed token sealed under the page token was XOR-sealed; it is now
sealed with AES-GCM, so the old values are emptied (the page offers a new calendar link).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "page_grant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("reminder_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["partner_id"], ["partner.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("page_grant", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_page_grant_partner_id"), ["partner_id"], unique=False)
    op.execute("UPDATE partner SET feed_token_sealed = NULL")


def downgrade() -> None:
    with op.batch_alter_table("page_grant", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_page_grant_partner_id"))
    op.drop_table("page_grant")
