"""Anonymous daily delivery counts: a finished reminder is counted here before its row goes.

Both the prune (``service.outbox.retention``) and the erasure of a couple
(``service.domain.couples.remove``) count before they delete, in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from service.db import upsert
from service.db.models import DeliveryStat, Reminder, ReminderState, table

_R = table(Reminder)
FINISHED = [s for s in ReminderState if s not in (ReminderState.SCHEDULED, ReminderState.SENDING)]
# pg_advisory_xact_lock key of "count reminders, then delete them" (any 64-bit number that
# nothing else in the database uses).
STATS_LOCK = 0x6865_6172_7468_0001


def count_into_stats(conn: Connection, where: sa.ColumnElement[bool]) -> None:
    """Add the finished reminders matching ``where`` to the anonymous daily counts. The
    caller deletes those rows before it commits."""
    if conn.dialect.name == "postgresql":
        # Held to commit: a concurrent prune or erasure waits here, and its count (a new
        # snapshot under READ COMMITTED) no longer sees the rows this transaction deletes.
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(STATS_LOCK)))
    day = sa.func.date(_R.c.due_at)
    state = unindexed(_R.c.state) if conn.dialect.name == "sqlite" else _R.c.state
    rows = conn.execute(
        sa.select(day, _R.c.channel, _R.c.state, sa.func.count())
        .where(where, state.in_(FINISHED))
        .group_by(day, _R.c.channel, _R.c.state)
    ).all()
    stats = table(DeliveryStat)
    for d, channel, state, n in rows:
        d = d if not isinstance(d, str) else datetime.strptime(d, "%Y-%m-%d").date()
        # One statement: two first counts of the same day cannot both insert.
        stmt = upsert.insert(conn, stats).values(day=d, channel=channel, state=state, count=n)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[stats.c.day, stats.c.channel, stats.c.state],
                set_={"count": stats.c.count + stmt.excluded.count},
            )
        )


def unindexed(col: sa.Column[Any]) -> sa.ColumnElement[Any]:
    """``+col``: the same value, but SQLite's planner will not use an index on it. Without
    stats it takes an index on ``state`` or a date for the better path, and then every
    chunk reads every old row; this leaves it the id range."""
    return sa.type_coerce(sa.literal_column(f"+{col.table.name}.{col.name}"), col.type)


def as_is(col: sa.Column[Any]) -> sa.ColumnElement[Any]:
    return col
