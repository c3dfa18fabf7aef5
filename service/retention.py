"""Data care: prune old rows, keep anonymous delivery counts.

Sent reminders, replies and events older than ``retention.days`` are deleted; before a
reminder row goes (by pruning or by erasing a couple) it is counted into ``delivery_stat``
(day, channel, final state), which holds no personal data.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from urllib.request import pathname2url

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from service import migrate, receipts
from service.app import Hearth
from service.exceptions import InvalidInput
from service.models import DeliveryStat, Event, Reminder, ReminderState, Reply, table

_R = table(Reminder)
_FINISHED = [s for s in ReminderState if s not in (ReminderState.SCHEDULED, ReminderState.SENDING)]


def count_into_stats(conn: Connection, where: sa.ColumnElement[bool]) -> None:
    """Add the finished reminders matching ``where`` to the anonymous daily counts."""
    day = sa.func.date(_R.c.due_at)
    rows = conn.execute(
        sa.select(day, _R.c.channel, _R.c.state, sa.func.count())
        .where(where, _R.c.state.in_(_FINISHED))
        .group_by(day, _R.c.channel, _R.c.state)
    ).all()
    stats: sa.Table = DeliveryStat.__table__  # type: ignore[assignment]
    for d, channel, state, n in rows:
        d = d if not isinstance(d, str) else datetime.strptime(d, "%Y-%m-%d").date()
        updated = conn.execute(
            stats.update()
            .where(stats.c.day == d, stats.c.channel == channel, stats.c.state == state)
            .values(count=stats.c.count + n)
        ).rowcount
        if not updated:
            conn.execute(stats.insert().values(day=d, channel=channel, state=state, count=n))


def prune(hearth: Hearth, days: int | None = None) -> dict[str, int]:
    keep = days if days is not None else hearth.settings.retention.days
    cutoff = hearth.clock.now() - timedelta(days=keep)
    old = sa.and_(_R.c.due_at < cutoff, _R.c.state.in_(_FINISHED))
    with hearth.db.write_engine.begin() as conn:
        count_into_stats(conn, old)
        reminders = conn.execute(_R.delete().where(old)).rowcount
        replies = conn.execute(sa.delete(Reply).where(Reply.received_at < cutoff)).rowcount
        evs = conn.execute(sa.delete(Event).where(Event.created_at < cutoff)).rowcount
        receipts.prune(conn, hearth.clock.now())
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
