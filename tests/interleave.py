"""Making a race certain instead of likely: which thread runs which statement, and whether a
thread's transaction is blocked on a lock another one holds.

A test holds one transaction at a chosen point until the other has come as far or is
blocked waiting for a lock the first holds (PostgreSQL: ``pg_blocking_pids``; SQLite: inside
``BEGIN IMMEDIATE``, its only wait for a writer). Without the lock a fix adds, the bad
interleaving then happens every time; with it, the test goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from service.db.engine import Database


class Statements:
    """Tracks, per thread, the statement being executed and the PostgreSQL backend, and
    calls ``before(statement)`` / ``after(statement)`` in the executing thread around each
    statement."""

    def __init__(
        self,
        db: Database,
        after: Callable[[str], None] | None = None,
        *,
        before: Callable[[str], None] | None = None,
    ) -> None:
        self.db = db
        self.after_hook, self.before_hook = after, before
        self.inside: dict[int, str] = {}
        self.pids: dict[int, int] = {}
        self.lock = threading.Lock()
        event.listen(db.engine, "before_cursor_execute", self._before)
        event.listen(db.engine, "after_cursor_execute", self._after)

    def close(self) -> None:
        event.remove(self.db.engine, "before_cursor_execute", self._before)
        event.remove(self.db.engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        me = threading.get_ident()
        with self.lock:
            self.inside[me] = statement
            if not self.db.is_sqlite:
                self.pids[me] = conn.connection.dbapi_connection.info.backend_pid
        if self.before_hook is not None:
            self.before_hook(statement)

    def _after(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        with self.lock:
            self.inside.pop(threading.get_ident(), None)
        if self.after_hook is not None:
            self.after_hook(statement)

    def blocked(self, thread: int, by: int) -> bool:
        """Whether ``thread``'s transaction waits for a lock that ``by``'s holds (SQLite:
        for the write lock, which only another writer can hold)."""
        with self.lock:
            statement, pid, holder = (
                self.inside.get(thread),
                self.pids.get(thread),
                self.pids.get(by),
            )
        if self.db.is_sqlite:
            return statement is not None and statement.startswith("BEGIN IMMEDIATE")
        if statement is None or pid is None:
            return False
        with self.db.engine.connect() as c:
            blockers = c.scalar(sa.text("SELECT pg_blocking_pids(:pid)"), {"pid": pid})
        return holder in (blockers or [])

    def others_blocked_by(self, me: int) -> bool:
        """Whether another thread waits for a lock ``me``'s transaction holds."""
        with self.lock:
            others = [t for t in self.inside if t != me]
        return any(self.blocked(t, by=me) for t in others)


def wait_until(done: Callable[[], bool], cond: threading.Condition) -> None:
    """Polls ``done`` (a lock table look-up, no clock involved) until it holds."""
    with cond:
        while not done():
            cond.wait(0.01)
