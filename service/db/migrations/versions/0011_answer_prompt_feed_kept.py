"""the question an answer answers: answer.prompt_id (for "our questions" on the page);
partner.feed_token_kept (the feed token sealed under the encryption keys)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

Earlier answers keep no question (NULL): the page shows them under the ritual's title.
Feed tokens issued earlier are not kept (only their hash is known): a page shows them as
before, from its own sealed copy or not at all.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("partner") as batch_op:
        batch_op.add_column(sa.Column("feed_token_kept", sa.Text(), nullable=True))
    with op.batch_alter_table("answer") as batch_op:
        batch_op.add_column(sa.Column("prompt_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_answer_prompt_id_prompt", "prompt", ["prompt_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("answer") as batch_op:
        batch_op.drop_constraint("fk_answer_prompt_id_prompt", type_="foreignkey")
        batch_op.drop_column("prompt_id")
    with op.batch_alter_table("partner") as batch_op:
        batch_op.drop_column("feed_token_kept")
