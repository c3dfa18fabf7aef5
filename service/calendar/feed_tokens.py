"""Feed tokens: 256 random bits from ``secrets``, shown once, stored only as SHA-256.

Each partner has their own token, so one can be revoked (rotated) without breaking the other's
subscription. Lookup hashes the presented token and compares hashes in the database: the
plain token exists only in the URL the partner holds.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shlex
import sqlite3
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

import psycopg
import sqlalchemy as sa
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.core.config import WebSettings
from service.core.exceptions import Conflict
from service.db.engine import fetch_by_digest
from service.db.models import Couple, Partner
from service.domain.events import EventType, record

TOKEN_BYTES = 32
_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32); used with fullmatch


def well_formed(token: str) -> bool:
    """Whether ``token`` could be one we issued. ``fullmatch``: ``$`` would also accept a
    trailing newline, letting a value no token has reach the hash and the database."""
    return _SHAPE.fullmatch(token) is not None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class FeedUrls:
    https: str
    webcal: str


def urls(web: WebSettings, token: str) -> FeedUrls:
    https = f"{web.public_base_url}/feeds/{token}.ics"
    return FeedUrls(https=https, webcal="webcal://" + https.split("://", 1)[1])


def issue(
    session: Session, now: datetime, partner: Partner, *, first: bool = False, ref: str = ""
) -> str:
    """A new token for ``partner``; the previous one stops working at once. ``first``: only
    if the partner has none yet (the plain token was never stored, so "show the URL again"
    could only mean a new token, which would break the subscription the partner has); ``ref``
    is how the admin named the partner, for the hint."""
    if first and partner.feed_token_hash is not None:
        raise Conflict(
            f"{partner.name} already has a feed URL; it cannot be shown again (only its hash is"
            f" stored): use `hearth feed rotate {shlex.quote(ref or partner.name)}` to issue"
            " a new one"
        )
    token = secrets.token_urlsafe(TOKEN_BYTES)
    rotated = partner.feed_token_hash is not None
    partner.feed_token_hash = digest(token)
    partner.feed_token_created_at = now
    partner.updated_at = now
    session.flush()
    record(
        session,
        EventType.FEED_ROTATED if rotated else EventType.FEED_ISSUED,
        now,
        partner.couple_id,
        partner_id=partner.id,
    )
    return token


_STAMP = (
    sa.select(Partner.couple_id, Couple.change_stamp, Couple.created_at, Partner.language)
    .join(Couple, Couple.id == Partner.couple_id)
    .where(Partner.feed_token_hash == sa.bindparam("digest"))
)


@lru_cache(maxsize=8)
def _stamp_sql(engine: Engine) -> tuple[str, bool]:
    """The stamp query as the engine's driver takes it, and whether its parameters are
    positional (SQLite's ``?``) or named (psycopg's ``%(digest)s``)."""
    compiled = _STAMP.compile(dialect=engine.dialect)
    return str(compiled), bool(compiled.positional)


class Stamp(NamedTuple):
    couple_id: int
    change_stamp: int
    # The couple row's identity beyond its id: SQLite hands a removed couple's id to the
    # next one, whose stamp starts over, and a cache must never take one for the other.
    born: object  # as the driver returns it (text on SQLite); only compared
    # The token holder's language: the feed is in it (a repair talk's title and guide).
    language: str = "en"


def _stamp(row: Sequence[Any]) -> Stamp:
    """A row of the stamp query as the driver returns it."""
    return Stamp(int(row[0]), int(row[1]), row[2], str(row[3]))


def couple_stamp(engine: Engine, token: str) -> Stamp | None:
    """The couple whose partner holds ``token``, and its change stamp, in one query.

    Every calendar poll runs this, so it talks to the driver on a pooled connection directly:
    through ``Connection.execute`` the same query cost five times as much on SQLite (the
    BEGIN, the statement pipeline, the ROLLBACK on close; docs/performance.md)."""
    if not well_formed(token):
        return None
    sql, positional = _stamp_sql(engine)
    key = digest(token)
    row = fetch_by_digest(engine, sql, positional, key)
    return None if row is None else _stamp(row)


class LoopReader:
    """Answers :func:`couple_stamp` on the event loop itself, for a SQLite file.

    On a feed poll whose couple has not changed, the lookup is the only work, and handing it
    to a worker thread and back cost more than the rest of the request together
    (docs/performance.md). A point query on an indexed column of a local WAL database takes
    microseconds and, with its own connection, never waits for a pooled one or for a writer:
    in WAL mode readers take no lock a writer holds. The busy timeout here is zero, so what
    would make a reader wait (another process holding the file exclusively, a database not
    in WAL mode while a writer commits) fails at once, and :meth:`stamp` answers ``False``
    for the caller to take the thread path instead. Opening a connection after a crash
    replays the WAL on the loop; that happens once.

    Each statement runs in autocommit, so it sees every commit made before it: a rotated
    token 404s on the very next request, as through the pool. One connection per thread
    that asks (normally just the event loop's), closed with the reader.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._closed = False
        # Closes the connections when the app (and this reader) go away without a shutdown.
        self._finalizer = weakref.finalize(self, _close_all, self._opened)

    @classmethod
    def for_engine(cls, engine: Engine) -> LoopReader | None:
        """A reader for a SQLite file engine; ``None`` for PostgreSQL, where the lookup is a
        network round trip and must stay off the loop, and for in-memory or URI databases,
        which a second connection would not see."""
        url = engine.url
        if url.get_backend_name() != "sqlite" or url.query:
            return None
        if url.database in (None, "", ":memory:") or url.database.startswith("file:"):
            return None
        return cls(url.database)

    def stamp(self, token: str) -> Stamp | Literal[False] | None:
        """As :func:`couple_stamp`, or ``False`` when this reader cannot answer now."""
        if not well_formed(token):
            return None
        if self._closed:
            return False
        try:
            # fetchall, not fetchone: a statement left unfinished would keep its read
            # transaction, and with it an old snapshot, open until the next request.
            rows = self._conn().execute(_sqlite_sql(), (digest(token),)).fetchall()
        except sqlite3.Error as exc:
            if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) not in _BUSY:
                self._drop()  # the file went away, say: the next request opens afresh
            return False
        return _stamp(rows[0]) if rows else None

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # timeout=0: never wait on the loop (see the class docstring). mode=rw: a
            # database that is not there is an error here, not a new empty file.
            uri = Path(self._path).absolute().as_uri() + "?mode=rw"
            conn = sqlite3.connect(
                uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA query_only=ON")
            except sqlite3.Error:
                conn.close()
                raise
            self._local.conn = conn
            self._opened.append(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            self._opened.remove(conn)
            conn.close()

    def close(self) -> None:
        self._closed = True
        self._finalizer()


class AsyncReader:
    """Answers :func:`couple_stamp` on the event loop for PostgreSQL, through psycopg's async
    connection pool: the lookup is a network round trip, which the loop awaits instead of
    handing it to a thread and back (the hand-off cost more than the rest of a 304).

    Opened by the app's lifespan (a pool belongs to one event loop) and closed with it; an
    app run without a lifespan keeps the thread path. Connections are in autocommit, so a
    lookup is one statement with no BEGIN or ROLLBACK, and each sees every commit before it.
    A pool that cannot hand out a connection in time, or a failing query, answers ``False``:
    the caller takes the thread path, which waits and reports as before.

    Up to 16 connections per web process (opened as polls need them): with 4, a burst of
    polls queued for a connection and the loop path was slower than the 4 feed threads
    (0.80x in bench/feeds.py); with 16 it is 1.27x, with a third of the p99."""

    def __init__(self, conninfo: str, sql: str, size: int = 16, wait: float = 1.0) -> None:
        self._conninfo = conninfo
        self._sql = sql
        self._size = size
        self._wait = wait
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None

    @classmethod
    def for_engine(cls, engine: Engine) -> AsyncReader | None:
        if engine.url.get_backend_name() != "postgresql":
            return None
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        return cls(conninfo, _stamp_sql(engine)[0])

    async def open(self) -> None:
        self._pool = AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self._size,
            open=False,
            kwargs={"autocommit": True},
            name="hearth-feeds",
        )
        await self._pool.open(wait=False)

    async def stamp(self, token: str) -> Stamp | Literal[False] | None:
        """As :func:`couple_stamp`, or ``False`` when this reader cannot answer now."""
        if not well_formed(token):
            return None
        pool = self._pool
        if pool is None or pool.closed:
            return False
        try:
            async with pool.connection(timeout=self._wait) as conn:
                cursor = await conn.execute(self._sql, {"digest": digest(token)})
                row = await cursor.fetchone()
        except (psycopg.Error, PoolTimeout):
            return False
        return None if row is None else _stamp(row)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)  # primary codes: the rest of the file is fine


def _close_all(conns: list[sqlite3.Connection]) -> None:
    for conn in conns:
        conn.close()
    conns.clear()


@lru_cache(maxsize=1)
def _sqlite_sql() -> str:
    from sqlalchemy.dialects import sqlite

    return str(_STAMP.compile(dialect=sqlite.dialect()))
