"""Engine and session setup for SQLite and PostgreSQL.

SQLite runs in WAL mode with foreign keys on. Its transactions start deferred; a writer that
must not interleave with another (the dispatcher's claim) asks for ``BEGIN IMMEDIATE`` through
:meth:`Database.session` with ``immediate=True``. PostgreSQL uses row locks instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from service.core.exceptions import DatabaseBusy, DatabaseUnavailable, SchemaMissing

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


def _sqlite_events(engine: Engine, lock_timeout: float) -> None:
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
        except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
            if _is_connect_failure(exc):
                raise DatabaseUnavailable(redact_url(self.url), _reason(exc)) from None
            if _is_missing_schema(exc):
                raise SchemaMissing(redact_url(self.url)) from None
            if _is_lock_timeout(exc):
                # Expected when another process keeps a write open past our wait: one line
                # for a person (exit 1), not a driver traceback.
                raise DatabaseBusy(redact_url(self.url), _reason(exc)) from None
            raise

    def check(self) -> None:
        """Raise DatabaseUnavailable unless a trivial query succeeds."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.OperationalError as exc:
            raise DatabaseUnavailable(redact_url(self.url), _reason(exc)) from None

    def dispose(self) -> None:
        self.engine.dispose()


def _is_missing_schema(exc: sa.exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def _is_lock_timeout(exc: sa.exc.DBAPIError) -> bool:
    # SQLite after busy_timeout: "database is locked" (or "... table is locked");
    # PostgreSQL past lock_timeout or with NOWAIT: "lock timeout" / "could not obtain lock".
    text = str(exc.orig).lower()
    return any(s in text for s in ("is locked", "lock timeout", "could not obtain lock"))


def _is_connect_failure(exc: sa.exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return any(
        s in text
        for s in ("connection refused", "could not connect", "unable to open", "connection failed")
    )


def _reason(exc: sa.exc.DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
