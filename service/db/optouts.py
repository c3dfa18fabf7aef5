"""Opt-outs seen at once by every sender.

A STOP answered "you will get no more texts" must be final from that moment. The dispatcher
reads the partner's consent from the database right before each send (that covers other
processes); this module closes the gap inside one process and shortens it across processes:

* :func:`mark` flags a session that records an opt-out. When that session commits, the
  in-process :func:`generation` counter goes up (SQLAlchemy ``after_commit``), so a send
  that read consent before the commit sees the counter move and reads it again.
* On PostgreSQL the same transaction sends ``NOTIFY hearth_opt_out``; the daemon's listener
  (``runtime/daemon.py``) bumps its own process's counter when the notification arrives.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

CHANNEL = "hearth_opt_out"
_KEY = "hearth_opt_out"
_lock = threading.Lock()
_generation = 0


def generation() -> int:
    return _generation


def bump() -> None:
    global _generation
    with _lock:
        _generation += 1


def mark(session: Session) -> None:
    """The session records an opt-out: bump the counter when it commits, and tell the
    other PostgreSQL workers (NOTIFY is delivered at commit, never on a rollback)."""
    session.info[_KEY] = True
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


def carry(session: Session, conn: sa.Connection) -> None:
    """A session joined to ``conn`` that never commits itself (a receipt's opt-out inside
    the webhook's transaction): the counter goes up when ``conn``'s transaction commits."""
    if session.info.pop(_KEY, False):
        conn.info[_KEY] = True


@event.listens_for(sa.Engine, "commit")
def _conn_committed(conn: sa.Connection) -> None:
    if conn.info.pop(_KEY, False):
        bump()


@event.listens_for(sa.Engine, "rollback")
def _conn_rolled_back(conn: sa.Connection) -> None:
    conn.info.pop(_KEY, None)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if session.info.pop(_KEY, False):
        bump()


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_KEY, None)
