"""Making a race certain instead of likely: which thread runs which statement, and whether a
thread's transaction is blocked on a lock another one holds.

A test holds one transaction at a chosen statement until the other has done its part or is
blocked waiting for a lock the first holds (PostgreSQL: an ungranted lock of its backend in
``pg_locks``; SQLite: inside ``BEGIN IMMEDIATE``, its only wait for a writer). Without the
lock the fix adds, the bad interleaving then happens every time; with it, the test goes on.
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
    calls ``hook(statement)`` in the executing thread just after each statement."""

    def __init__(self, db: Database, hook: Callable[[str], None] | None = None) -> None:
        self.db = db
        self.hook = hook
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

    def _after(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        with self.lock:
            self.inside.pop(threading.get_ident(), None)
        if self.hook is not None:
            self.hook(statement)

    def blocked(self, thread: int) -> bool:
        """Whether ``thread``'s transaction waits for a lock held by another."""
        with self.lock:
            statement, pid = self.inside.get(thread), self.pids.get(thread)
        if self.db.is_sqlite:
            return statement is not None and statement.startswith("BEGIN IMMEDIATE")
        if statement is None or pid is None:
            return False
        with self.db.engine.connect() as c:
            waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = :pid"
            return bool(c.scalar(sa.text(waiting), {"pid": pid}))


def wait_until(done: Callable[[], bool], cond: threading.Condition) -> None:
    """Polls ``done`` (a lock table look-up, no clock involved) until it holds."""
    with cond:
        while not done():
            cond.wait(0.01)
