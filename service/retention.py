"""Data care: prune old rows, keep anonymous delivery counts.

Sent reminders, replies and events older than ``retention.days`` are deleted; before a
reminder row goes (by pruning or by erasing a couple) it is counted into ``delivery_stat``
(day, channel, final state), which holds no personal data.

Each reminder is counted once even when prunes and erasures run at the same time (the
daemon's, ``hearth prune``, ``hearth couple remove``, several workers): counting and deleting
happen in one transaction under a lock (PostgreSQL: a transaction-scoped advisory lock; SQLite:
the one writer), so a second transaction counts only what the first left behind.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from urllib.request import pathname2url

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from service import migrate, receipts
from service.app import Hearth
from service.exceptions import InvalidInput
from service.models import DeliveryStat, Event, Reminder, ReminderState, Reply, table

_R = table(Reminder)
_FINISHED = [s for s in ReminderState if s not in (ReminderState.SCHEDULED, ReminderState.SENDING)]
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
    rows = conn.execute(
        sa.select(day, _R.c.channel, _R.c.state, sa.func.count())
        .where(where, _R.c.state.in_(_FINISHED))
        .group_by(day, _R.c.channel, _R.c.state)
    ).all()
    stats = table(DeliveryStat)
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for d, channel, state, n in rows:
        d = d if not isinstance(d, str) else datetime.strptime(d, "%Y-%m-%d").date()
        # One statement: two first counts of the same day cannot both insert.
        stmt = insert(stats).values(day=d, channel=channel, state=state, count=n)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[stats.c.day, stats.c.channel, stats.c.state],
                set_={"count": stats.c.count + stmt.excluded.count},
            )
        )


def prune(hearth: Hearth, days: int | None = None) -> dict[str, int]:
    keep = days if days is not None else hearth.settings.retention.days
    with hearth.db.begin() as conn:
        return prune_in(conn, hearth.clock.now(), keep)


def prune_in(conn: Connection, now: datetime, days: int) -> dict[str, int]:
    """Prune in the caller's transaction (the daemon claims the day's run in the same one)."""
    cutoff = now - timedelta(days=days)
    old = sa.and_(_R.c.due_at < cutoff, _R.c.state.in_(_FINISHED))
    count_into_stats(conn, old)
    reminders = conn.execute(_R.delete().where(old)).rowcount
    replies = conn.execute(sa.delete(Reply).where(Reply.received_at < cutoff)).rowcount
    evs = conn.execute(sa.delete(Event).where(Event.created_at < cutoff)).rowcount
    receipts.prune(conn, now)
    return {"reminders": reminders, "replies": replies, "events": evs}


def backup_sqlite(hearth: Hearth, dest: Path) -> int:
    """Copy a live SQLite database with the online backup API (consistent while the daemon
    writes). Returns the copy's size in bytes. PostgreSQL is backed up with pg_dump."""
    url = sa.engine.make_url(hearth.db.url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        raise InvalidInput(
            "backup", "only a SQLite file database can be backed up by Hearth",
            "for PostgreSQL use pg_dump, see docs/operations.md",
        )  # fmt: skip
    if not Path(url.database).is_file():
        # Checked first: opening a missing SQLite file would create an empty one to copy.
        raise InvalidInput("database", f"{url.database} does not exist", "check database.url")
    migrate.require_current(hearth.db)  # a file without Hearth's schema is not worth a copy
    if dest.exists():
        raise InvalidInput("destination", f"{dest} already exists", "choose a new file name")
    if not dest.parent.is_dir():
        raise InvalidInput("destination", f"directory {dest.parent} does not exist")
    partial = dest.with_name(dest.name + ".partial")
    src = sqlite3.connect(f"file:{pathname2url(url.database)}?mode=ro", uri=True)
    try:
        out = sqlite3.connect(partial)
        try:
            src.backup(out)
        finally:
            out.close()
        partial.rename(dest)  # a half-written copy never carries the final name
    except (sqlite3.Error, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise InvalidInput("destination", f"cannot write {dest}: {exc}") from None
    finally:
        src.close()
    return dest.stat().st_size
