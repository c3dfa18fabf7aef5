"""name keys (Unicode-aware matching), derived unsubscribe links, the server's secrets

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

``couple.name_key`` and ``partner.name_key`` hold the case-folded, normalised name
(service/core/text.py) under unique indexes. Existing rows are back-filled; where two
names already match each other (possible before: SQLite's lower() knows only ASCII), the
later row's name gets its id appended, so that both stay reachable and distinct.

Unsubscribe links are derived from a server key (made here) and a per-partner generation;
the stored plain-text tokens are emptied (old links stop working; the column goes later).
"""

from __future__ import annotations

import secrets
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

KEY = 400


def name_key(name: str) -> str:
    """service.core.text.name_key as of this migration (a migration must not change later)."""
    folded = unicodedata.normalize("NFD", " ".join(name.split())).casefold()
    return unicodedata.normalize("NFC", folded)


def _backfill(table: str, scope: str | None) -> None:
    conn = op.get_bind()
    cols = "id, name" + (f", {scope}" if scope else "")
    rows = conn.execute(sa.text(f"SELECT {cols} FROM {table} ORDER BY id")).all()
    seen: set[tuple[object, str]] = set()
    for row in rows:
        where = row[2] if scope else None
        name, key = row[1], name_key(row[1])
        if (where, key) in seen:
            name = f"{name} ({row[0]})"[:120]
            key = name_key(name)
        seen.add((where, key))
        conn.execute(
            sa.text(f"UPDATE {table} SET name = :name, name_key = :key WHERE id = :id"),
            {"name": name, "key": key, "id": row[0]},
        )


def upgrade() -> None:
    with op.batch_alter_table("couple") as batch_op:
        batch_op.add_column(sa.Column("name_key", sa.String(length=KEY), nullable=True))
    with op.batch_alter_table("partner") as batch_op:
        batch_op.add_column(sa.Column("name_key", sa.String(length=KEY), nullable=True))
        batch_op.add_column(
            sa.Column("unsubscribe_generation", sa.Integer(), nullable=False, server_default="1")
        )
    _backfill("couple", None)
    _backfill("partner", "couple_id")
    op.execute("UPDATE partner SET unsubscribe_token = NULL")
    with op.batch_alter_table("couple") as batch_op:
        batch_op.alter_column("name_key", existing_type=sa.String(length=KEY), nullable=False)
        batch_op.create_unique_constraint("uq_couple_name_key", ["name_key"])
    with op.batch_alter_table("partner") as batch_op:
        batch_op.alter_column("name_key", existing_type=sa.String(length=KEY), nullable=False)
        batch_op.alter_column("unsubscribe_generation", server_default=None)
        batch_op.create_unique_constraint("uq_partner_couple_name_key", ["couple_id", "name_key"])
    secret = op.create_table(
        "server_secret",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.bulk_insert(secret, [{"name": "unsubscribe", "value": secrets.token_hex(32)}])


def downgrade() -> None:
    op.drop_table("server_secret")
    with op.batch_alter_table("partner") as batch_op:
        batch_op.drop_constraint("uq_partner_couple_name_key", type_="unique")
        batch_op.drop_column("unsubscribe_generation")
        batch_op.drop_column("name_key")
    with op.batch_alter_table("couple") as batch_op:
        batch_op.drop_constraint("uq_couple_name_key", type_="unique")
        batch_op.drop_column("name_key")
