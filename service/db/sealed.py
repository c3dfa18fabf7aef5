"""Re-encryption of what partners wrote, and of kept feed tokens, after a key rotation
(``hearth crypto reencrypt``).

Each sealed column is read in id order, a chunk per transaction, and every value not under
the current key is sealed again with it; a reply stored before encryption was configured
is sealed too. Nothing is decrypted into a log or an error message.
"""

from __future__ import annotations

import sqlalchemy as sa

from service.core.crypto import PREFIX, Keyring
from service.db.engine import Database
from service.db.models import Answer, Partner, Reminder, Reply, table

CHUNK = 500


def _columns() -> list[tuple[str, sa.Table, sa.Column[str], bool]]:
    """(name, table, column, whether clear values are sealed too)."""
    return [
        ("replies", table(Reply), table(Reply).c.body, True),
        ("answers", table(Answer), table(Answer).c.text, True),
        # Only messages that were sealed: a nudge's body is Hearth's own text.
        ("messages", table(Reminder), table(Reminder).c.body, False),
        # Kept feed tokens (service/calendar/feed_keep.py): partners' calendars keep working.
        ("feeds", table(Partner), table(Partner).c.feed_token_kept, False),
    ]


def reencrypt(db: Database, keys: Keyring, chunk: int = CHUNK) -> dict[str, int]:
    """Seal every value under the current key; returns how many were rewritten per kind."""
    if not keys.configured:
        keys.seal("")  # raises the one-line "no key configured"
    done: dict[str, int] = {}
    for name, t, col, clear_too in _columns():
        done[name] = 0
        last = 0
        while True:
            cond = sa.and_(t.c.id > last, col.is_not(None), col != "")
            if not clear_too:
                cond = sa.and_(cond, col.startswith(PREFIX))
            with db.begin() as conn:
                rows = conn.execute(
                    sa.select(t.c.id, col).where(cond).order_by(t.c.id).limit(chunk)
                ).all()
                for rid, value in rows:
                    new = keys.reseal(value)
                    if new is not None:
                        conn.execute(t.update().where(t.c.id == rid).values({col.key: new}))
                        done[name] += 1
            if len(rows) < chunk:
                break
            last = rows[-1][0]
    return done
