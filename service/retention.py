"""Data care: prune old rows, keep anonymous delivery counts.

Sent reminders, replies and events older than ``retention.days`` are deleted; before a
reminder row goes (by pruning or by erasing a couple) it is counted into ``delivery_stat``
(day, channel, final state), which holds no personal data.

Pruning goes in chunks of :data:`CHUNK` rows, one transaction each, so that it never holds
the write lock for long. Each reminder is counted once even when prunes and erasures run at
the same time (the
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
from service.db import Database
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


# Rows deleted per transaction. A first prune after a year of history, or a day of a large
# community's reminders, in one transaction would hold SQLite's write lock (PostgreSQL: the
# rows' locks) for as long as it takes, and every claim by the dispatchers would wait behind
# it, past their lock timeout.
CHUNK = 2000


def prune(hearth: Hearth, days: int | None = None) -> dict[str, int]:
    keep = days if days is not None else hearth.settings.retention.days
    return prune_in_chunks(hearth.db, hearth.clock.now(), keep)


def prune_in_chunks(db: Database, now: datetime, days: int, chunk: int = CHUNK) -> dict[str, int]:
    """Delete what is older than ``days`` in transactions of at most ``chunk`` rows each, so
    other writers get in between. Each chunk counts its reminders into the stats before it
    deletes them, in its own transaction: a prune cut short leaves no row counted twice, and
    the next one goes on where it stopped."""
    cutoff = now - timedelta(days=days)
    old_reminders = sa.and_(_R.c.due_at < cutoff, _R.c.state.in_(_FINISHED))
    removed = {"reminders": 0, "replies": 0, "events": 0}
    tables = (
        ("reminders", _R, old_reminders),
        ("replies", table(Reply), table(Reply).c.received_at < cutoff),
        ("events", table(Event), table(Event).c.created_at < cutoff),
    )
    for name, t, old in tables:
        while True:
            with db.begin() as conn:
                n = _delete_chunk(conn, t, old, chunk, counted=t is _R)
            removed[name] += n
            if n < chunk:
                break
    with db.begin() as conn:
        receipts.prune(conn, now)
    return removed


def _delete_chunk(
    conn: Connection, t: sa.Table, old: sa.ColumnElement[bool], chunk: int, *, counted: bool
) -> int:
    ids = conn.scalars(sa.select(t.c.id).where(old).order_by(t.c.id).limit(chunk)).all()
    if not ids:
        return 0
    # ``old`` again: the rows are read before the stats lock is taken (count_into_stats),
    # and what another prune deleted meanwhile is neither counted nor deleted twice.
    these = sa.and_(t.c.id.in_(ids), old)
    if counted:
        count_into_stats(conn, these)
    return int(conn.execute(t.delete().where(these)).rowcount)


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
