"""Engine and session setup for SQLite and PostgreSQL.

SQLite runs in WAL mode with foreign keys on. Its transactions start deferred; a writer that
must not interleave with another (the dispatcher's claim) asks for ``BEGIN IMMEDIATE`` through
:meth:`Database.session` with ``immediate=True``. PostgreSQL uses row locks instead.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from service.core.exceptions import DatabaseBusy, DatabaseUnavailable, SchemaMissing
from service.core.files import create_private

_IMMEDIATE = "hearth_sqlite_immediate"


def redact_url(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def make_engine(url: str, *, echo: bool = False, lock_timeout: float = 30.0) -> Engine:
    # Statement parameters are message bodies, numbers and addresses: keep them out of the
    # text of every database error (which reaches logs through log.exception) and of echo.
    kwargs: dict[str, Any] = {"hide_parameters": True, "future": True}
    if echo:
        # Not create_engine(echo=True): that adds a handler of SQLAlchemy's own that writes
        # past the redaction in service.logs. The level alone sends the statements through
        # the one logging pipeline.
        logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": lock_timeout}
        engine = sa.create_engine(url, **kwargs)
        _sqlite_events(engine, lock_timeout)
        return engine
    # A schema can be chosen in the URL: ?options=-csearch_path%3Dname (the tests do).
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    kwargs.update(connect_args=connect_args, pool_pre_ping=True, pool_size=10, max_overflow=60)
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # As SQLite's busy timeout: a statement blocked by another transaction's lock gives
        # up with one line (DatabaseBusy) instead of waiting for ever.
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET lock_timeout = {int(lock_timeout * 1000)}")
        dbapi_conn.commit()

    return engine


def _create_private(url: str) -> None:
    """A new SQLite file is made 0600 before SQLite makes it with the umask's mode."""
    database = sa.engine.make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database)
        if path.parent.is_dir():
            create_private(path)


def _sqlite_events(engine: Engine, lock_timeout: float) -> None:
    @event.listens_for(engine, "do_connect")
    def _before_connect(*_args: Any) -> None:
        _create_private(str(engine.url))  # just before SQLite would create the file itself

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so BEGIN IMMEDIATE is possible.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    def __init__(self, url: str, *, echo: bool = False, lock_timeout: float = 30.0) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo, lock_timeout=lock_timeout)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # For transactions that read then write: on SQLite a deferred one cannot upgrade
        # its lock while another writer waits, and fails at once instead of queueing.
        self.write_engine = self.engine.execution_options(**{_IMMEDIATE: True})
        self._immediate = sessionmaker(self.write_engine, expire_on_commit=False)

    @contextmanager
    def session(self, *, immediate: bool = False) -> Iterator[Session]:
        """A unit of work: commits when the block ends, rolls back if it raises."""
        factory = self._immediate if immediate and self.is_sqlite else self._sessions
        with self._translated(), factory() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A Core connection for a hot read path that needs no ORM objects."""
        with self._translated(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A Core write transaction on the write engine, with the same one-line errors."""
        with self._translated(), self.write_engine.begin() as conn:
            yield conn

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.DBAPIError as exc:
            kind = classify(exc)
            url = redact_url(self.url)
            if kind is Failure.UNREACHABLE:
                raise DatabaseUnavailable(url, _reason(exc)) from None
            if kind is Failure.NO_SCHEMA:
                raise SchemaMissing(url) from None
            if kind is Failure.BUSY:
                # Expected when another process keeps a write open past our wait: one line
                # for a person (exit 1), not a driver traceback.
                raise DatabaseBusy(url, _reason(exc)) from None
            raise

    def check(self) -> None:
        """Raise DatabaseUnavailable (or SchemaMissing...) unless a trivial query succeeds."""
        with self._translated(), self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def erase_traces(self) -> bool:
        """After personal data was deleted: on SQLite, copy the write-ahead log into the
        database and empty it, so the old copies of the deleted rows' pages go too. False
        when a reader kept it from completing (the next checkpoint finishes the job).
        PostgreSQL keeps dead rows until VACUUM (docs/operations.md)."""
        if not self.is_sqlite:
            return True
        with self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            busy = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        return not busy

    def dispose(self) -> None:
        self.engine.dispose()


class Failure(StrEnum):
    UNREACHABLE = "unreachable"  # no server, no file, or one that cannot be used as it is
    NO_SCHEMA = "no_schema"
    BUSY = "busy"  # a lock held past our wait
    OTHER = "other"  # the statement's own fault: the caller's to handle


# SQLite primary result codes (https://sqlite.org/rescode.html), the low byte of
# sqlite_errorcode: the file is missing, unreadable, not a database, read-only or full.
# PERM 3, READONLY 8, IOERR 10, CORRUPT 11, FULL 13, CANTOPEN 14, PROTOCOL 15, NOTADB 26.
_SQLITE_UNUSABLE = {3, 8, 10, 11, 13, 14, 15, 26}
_SQLITE_BUSY = {5, 6}  # BUSY, LOCKED
# PostgreSQL SQLSTATE classes and codes: language-independent, unlike the message text.
_PG_UNREACHABLE = ("08", "28", "3D000", "53", "57P01", "57P02", "57P03")
_PG_NO_SCHEMA = ("42P01", "3F000")
_PG_BUSY = ("55P03", "40P01")


def classify(exc: sa.exc.DBAPIError) -> Failure:
    """What a driver error means, by SQLSTATE (psycopg) or result code (sqlite3), so a
    PostgreSQL server that answers in German is understood as well as one in English."""
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        code = (getattr(orig, "sqlite_errorcode", None) or 0) & 0xFF
        if code in _SQLITE_BUSY:
            return Failure.BUSY
        if code in _SQLITE_UNUSABLE:
            return Failure.UNREACHABLE
        # SQLITE_ERROR covers many things; SQLite's messages are never translated.
        if code == 1 and "no such table" in str(orig):
            return Failure.NO_SCHEMA
        return Failure.OTHER
    state = getattr(orig, "sqlstate", None)
    if state is None:
        # psycopg's own connection failures (refused, unresolvable host) carry no SQLSTATE.
        return Failure.UNREACHABLE if isinstance(exc, sa.exc.OperationalError) else Failure.OTHER
    if state.startswith(_PG_UNREACHABLE):
        return Failure.UNREACHABLE
    if state in _PG_NO_SCHEMA:
        return Failure.NO_SCHEMA
    if state in _PG_BUSY:
        return Failure.BUSY
    return Failure.OTHER


def _reason(exc: sa.exc.DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)


def fetch_by_digest(engine: sa.Engine, sql: str, positional: bool, key: str) -> Any:
    """One row of a driver-level query whose one parameter is ``digest`` (a token's hash),
    on a pooled connection directly: the hot token lookups (feeds, pages) skip the BEGIN,
    the statement pipeline and the ROLLBACK a ``Connection.execute`` would cost."""
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        try:
            cursor.execute(sql, (key,) if positional else {"digest": key})
            return cursor.fetchone()
        finally:
            cursor.close()
    finally:
        conn.close()  # back to the pool, which ends any transaction the driver began
