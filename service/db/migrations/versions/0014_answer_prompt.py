"""the question an answer answers: answer.prompt_id (for "our questions" on the page)

Revision ID: 0014
Revises: 0009
Create Date: 2026-12-07

Earlier answers keep no question (NULL): the page shows them under the ritual's title.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("answer") as batch_op:
        batch_op.add_column(sa.Column("prompt_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_answer_prompt_id_prompt", "prompt", ["prompt_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("answer") as batch_op:
        batch_op.drop_constraint("fk_answer_prompt_id_prompt", type_="foreignkey")
        batch_op.drop_column("prompt_id")
