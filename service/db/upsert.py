"""One INSERT that can say ON CONFLICT, whichever database is behind the connection.

PostgreSQL and SQLite spell ``ON CONFLICT ... DO NOTHING / DO UPDATE`` the same way, but
SQLAlchemy builds it with each dialect's own ``insert``; this picks it once, for every module
that upserts (the event watermark, daemon state, delivery stats, prompt rotations, the
server's secrets).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session


def insert(bind: Connection | Session, target: Any) -> postgresql.Insert | sqlite.Insert:
    """``INSERT INTO target`` in the dialect of ``bind``, with ``on_conflict_do_*`` and
    ``excluded``."""
    dialect = bind.dialect if isinstance(bind, Connection) else bind.get_bind().dialect
    make = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    return make(target)
