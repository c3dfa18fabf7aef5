"""Bulk inserts of planned reminder rows through the driver (the planner's hot path).

One ``executemany`` of plain tuples, the statement text built once per dialect; rows the
outbox's unique key already holds are ignored (``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from service.db.models import Reminder, table

_T = table(Reminder)

# Column order of the bulk insert; the statement text is built once per dialect.
COLUMNS = (
    "couple_id",
    "ritual_id",
    "partner_id",
    "channel",
    "offset_minutes",
    "purpose",
    "occurrence_start",
    "due_at",
    "expires_at",
    "state",
    "attempts",
    "next_attempt_at",
    "created_at",
    "updated_at",
    "standby",
)


def insert_sql(conn: Connection, on_conflict: bool = True) -> str:
    cols = ", ".join(COLUMNS)
    if conn.dialect.name == "postgresql":
        marks = ", ".join(["%s"] * len(COLUMNS))
    else:
        marks = ", ".join(["?"] * len(COLUMNS))
    tail = " ON CONFLICT DO NOTHING" if on_conflict else ""
    return f"INSERT INTO reminder ({cols}) VALUES ({marks}){tail}"


def adapt_rows(conn: Connection, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Raw driver rows: SQLite stores naive UTC text (as :class:`UTCDateTime` does)."""
    if conn.dialect.name != "sqlite":
        return rows
    idx = [i for i, name in enumerate(COLUMNS) if name.endswith(("_at", "_start"))]
    text: dict[datetime, str] = {}  # planned rows share few distinct instants
    out = []
    for row in rows:
        values = list(row)
        for i in idx:
            v = values[i]
            s = text.get(v)
            if s is None:
                s = text[v] = v.strftime(_SQLITE_FORMAT)
            values[i] = s
        out.append(tuple(values))
    return out


# The text form SQLAlchemy's SQLite DateTime writes: keys and comparisons are string-based
# there, so the bulk path must write exactly the same form.
_SQLITE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def insert_rows(conn: Connection, rows: list[tuple[Any, ...]]) -> int:
    """Insert planned rows, ignoring those already present; returns how many were new."""
    if not rows:
        return 0
    before = _count(conn)
    conn.exec_driver_sql(insert_sql(conn), adapt_rows(conn, rows))
    return _count(conn) - before


def _count(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(_T)).scalar_one())
