"""Facts the daemon processes share through the database, one instant per name.

``dispatcher``: when a dispatcher loop last completed a pass. Every worker writes it (at most
every :data:`HEARTBEAT_EVERY`, not per pass), and ``/readyz`` in any process, a separate
``hearth web`` included, reads it: the in-memory gauge only describes its own process.

``prune``: when the daily prune last ran. Each daemon checks every minute and claims the run
with a conditional upsert, so of several workers exactly one prunes per day.

Both writes are one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` statement: the first writer
creates the row, later ones update it only when their condition holds, and on PostgreSQL a
racing writer waits for the other's commit and then re-checks the condition against it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from service.db import upsert
from service.db.engine import Database
from service.db.models import DaemonState, table

log = structlog.get_logger("hearth.dispatch")

DISPATCHER = "dispatcher"
PRUNE = "prune"
# Often enough for /readyz to notice a stalled loop within its window, rare enough to be
# no write load (a busy loop passes many times a second).
HEARTBEAT_EVERY = timedelta(seconds=10)

_S = table(DaemonState)


def _upsert(conn: Connection, name: str, now: datetime, when: sa.ColumnElement[bool]) -> int:
    stmt = upsert.insert(conn, _S).values(name=name, at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_S.c.name], set_={"at": stmt.excluded.at}, where=when
    )
    # SQLAlchemy keeps an INSERT's rowcount only when asked; it is the whole answer here.
    return int(conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount)


def beat(conn: Connection, name: str, now: datetime) -> None:
    """Record ``now`` under ``name`` unless a newer instant is already there (another
    worker's, whose clock runs a little ahead)."""
    _upsert(conn, name, now, _S.c.at < now)


class Heartbeat:
    """Writes ``name``'s instant at most every :data:`HEARTBEAT_EVERY` (a busy loop passes
    many times a second); a failed write is logged and tried again at the next beat."""

    def __init__(self, db: Database, name: str) -> None:
        self._db, self._name = db, name
        self._at: datetime | None = None

    def beat(self, now: datetime) -> None:
        if self._at is not None and now - self._at < HEARTBEAT_EVERY:
            return
        try:
            with self._db.begin() as conn:
                beat(conn, self._name, now)
        except Exception:
            log.exception("heartbeat_not_recorded")
            return
        self._at = now


def claim(conn: Connection, name: str, now: datetime, every: timedelta) -> bool:
    """True for exactly one caller per ``every``: the row is missing or at least ``every``
    old, and this call moved it to ``now``. The caller does the work in the same transaction,
    so a failure rolls the claim back and the next check tries again."""
    return _upsert(conn, name, now, _S.c.at <= now - every) == 1


def release(conn: Connection, name: str, claimed_at: datetime) -> None:
    """Give back the claim made at ``claimed_at`` (the work failed): the next check claims
    again. A newer claim, another worker's, is left alone."""
    conn.execute(sa.delete(_S).where(_S.c.name == name, _S.c.at == claimed_at))


def last(conn: Connection, name: str) -> datetime | None:
    return conn.scalar(sa.select(_S.c.at).where(_S.c.name == name))
