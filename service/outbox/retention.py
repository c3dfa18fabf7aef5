"""Data care: prune old rows, keep anonymous delivery counts.

Sent reminders, replies and events older than ``retention.days`` are deleted; before a
reminder row goes (by pruning or by erasing a couple) it is counted into ``delivery_stat``
(day, channel, final state), which holds no personal data.

Pruning goes in chunks of :data:`CHUNK` rows, one transaction each, so that it never holds
the write lock for long. Each reminder is counted once even when prunes and erasures run at
the same time (the daemon's, ``hearth prune``, ``hearth couple remove``, several workers):
counting and deleting happen in one transaction under a lock (PostgreSQL: a
transaction-scoped advisory lock; SQLite: the one writer), so a second transaction counts
only what the first left behind.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timedelta
from pathlib import Path
from urllib.request import pathname2url

import sqlalchemy as sa

from service.core.clock import SYSTEM_CLOCK, Clock
from service.core.exceptions import InvalidInput
from service.core.files import create_private
from service.core.text import cut
from service.db import migrate
from service.db.context import Hearth
from service.db.delivery_stats import FINISHED, as_is, count_into_stats, unindexed
from service.db.engine import Database
from service.db.models import Answer, Event, Reminder, Reply, table
from service.outbox import receipts

_R = table(Reminder)
# Rows deleted per transaction. A first prune after a year of history, or a day of a large
# community's reminders, in one transaction would hold SQLite's write lock (PostgreSQL: the
# rows' locks) for as long as it takes, and every claim by the dispatchers would wait behind
# it, past their lock timeout.
CHUNK = 2000
# Rest between chunks, as a share of the time the chunk took.
REST = 0.5


def prune(hearth: Hearth, days: int | None = None) -> dict[str, int]:
    keep = days if days is not None else hearth.settings.retention.days
    return prune_in_chunks(hearth.db, hearth.clock.now(), keep)


def prune_in_chunks(
    db: Database,
    now: datetime,
    days: int,
    chunk: int = CHUNK,
    rest: float = REST,
    stop: threading.Event | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, int]:
    """Delete what is older than ``days`` in transactions of at most ``chunk`` consecutive
    ids each, resting ``rest`` times as long as each took before the next, so that other
    writers get in between (SQLite hands its lock to whoever asks first after a commit, and
    a writer waiting in its busy handler only looks now and then). Each chunk counts its
    reminders into the stats before it deletes them, in its own transaction: a prune cut
    short leaves no row counted twice, and the next one goes on where it stopped. A set
    ``stop`` (the daemon's shutdown) ends it between two chunks."""
    stop = stop or threading.Event()
    cutoff = now - timedelta(days=days)
    replies, events, answers = table(Reply), table(Event), table(Answer)
    c = unindexed if db.is_sqlite else as_is
    work = (
        ("reminders", _R, sa.and_(c(_R.c.due_at) < cutoff, c(_R.c.state).in_(FINISHED))),
        ("replies", replies, c(replies.c.received_at) < cutoff),
        ("answers", answers, c(answers.c.answered_at) < cutoff),
        ("events", events, c(events.c.created_at) < cutoff),
    )
    removed = dict.fromkeys((name for name, _, _ in work), 0)
    for name, t, old in work:
        # Windows of ids from one old row on, not "the next ``chunk`` old rows": each
        # statement is then a range scan of the primary key, where picking rows by a filter
        # re-read every old row (bench/prune.py). Each window starts at the next old id, so
        # a gap in the ids costs nothing.
        nxt = sa.select(sa.func.min(t.c.id)).where(t.c.id >= sa.bindparam("from_id"), old)
        start: int | None = 0
        while not stop.is_set():
            with db.read() as conn:
                start = conn.scalar(nxt, {"from_id": start})
            if start is None:
                break
            began = clock.monotonic()
            these = sa.and_(t.c.id >= start, t.c.id < start + chunk, old)
            with db.begin() as conn:
                if t is _R:
                    count_into_stats(conn, these)
                removed[name] += int(conn.execute(t.delete().where(these)).rowcount)
            start += chunk
            stop.wait(rest * (clock.monotonic() - began))  # room for the dispatchers
    if not stop.is_set():
        with db.begin() as conn:
            receipts.prune(conn, now)
    return removed


def backup_sqlite(hearth: Hearth, dest: Path) -> int:
    """Copy a live SQLite database with the online backup API (consistent while the daemon
    writes). Returns the copy's size in bytes. PostgreSQL is backed up with pg_dump."""
    url = sa.engine.make_url(hearth.db.url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        raise InvalidInput(
            "backup",
            "only a SQLite file database can be backed up by Hearth",
            "for PostgreSQL use pg_dump, see docs/operations.md",
        )
    if not Path(url.database).is_file():
        # Checked first: opening a missing SQLite file would create an empty one to copy.
        raise InvalidInput("database", f"{url.database} does not exist", "check database.url")
    migrate.require_current(hearth.db)  # a file without Hearth's schema is not worth a copy
    try:
        if dest.exists():
            raise InvalidInput(
                "destination", f"{cut(str(dest))} already exists", "choose a new file name"
            )
        if not dest.parent.is_dir():
            raise InvalidInput("destination", f"directory {cut(str(dest.parent))} does not exist")
    except OSError as exc:  # a name too long for the file system, say
        raise InvalidInput("destination", f"{cut(str(dest))}: {exc.strerror}") from None
    partial = dest.with_name(dest.name + ".partial")
    src = sqlite3.connect(f"file:{pathname2url(url.database)}?mode=ro", uri=True)
    try:
        create_private(partial)  # a copy of everyone's data: owner only
        out = sqlite3.connect(partial)
        try:
            src.backup(out)
        finally:
            out.close()
        partial.rename(dest)  # a half-written copy never carries the final name
    except (sqlite3.Error, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise InvalidInput("destination", f"cannot write {cut(str(dest))}: {exc}") from None
    finally:
        src.close()
    return dest.stat().st_size
