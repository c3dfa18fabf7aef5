"""Shared fixtures: a fake clock, both databases, settings, the service context, the CLI.

``db`` is parametrized over SQLite (a real file) and PostgreSQL (a fresh schema in the
``test`` database on 127.0.0.1:5432, one per test session). PostgreSQL tests skip with a
reason when the server is unreachable, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from cli.main import cli
from service.core.clock import FakeClock
from service.core.config import Settings
from service.db import migrate
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Base

# tests.browser: one headless Chromium for the whole session, shared by every browser test.
pytest_plugins = ["tests.peers.fixtures", "tests.browser"]

PG_BASE = os.environ.get("HEARTH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not see a developer's HEARTH_* settings."""
    for key in list(os.environ):
        if key.upper().startswith("HEARTH_") and key != "HEARTH_TEST_PG":
            monkeypatch.delenv(key)


def _pg_available() -> str | None:
    try:
        engine = sa.create_engine(PG_BASE, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure to reach the server
        return f"PostgreSQL unreachable at {PG_BASE}: {str(exc).splitlines()[0]}"


def require_postgres() -> None:
    reason = _pg_available()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(reason)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The generated histories' world (tests/histories/) on each database. (test_fuzz_cli
    has a ``world`` of its own.)"""
    from tests.histories.world import World  # loads the whole stack: only where used

    if request.param == "postgres":
        require_postgres()
    w = World(request.param)
    yield w
    w.close()


class PgSchema:
    """A throwaway schema; its URL carries the search_path so subprocesses use it too."""

    def __init__(self) -> None:
        self.name = f"hearth_test_{uuid.uuid4().hex[:12]}"
        self.admin = sa.create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{self.name}"'))
        self.url = f"{PG_BASE}?options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def _pg_schema() -> Iterator[PgSchema]:
    require_postgres()
    schema = PgSchema()
    yield schema
    schema.drop()


@pytest.fixture
def pg_schema() -> Iterator[PgSchema]:
    """A fresh, empty PostgreSQL schema for one test (migration tests, subprocesses)."""
    require_postgres()
    schema = PgSchema()
    yield schema
    schema.drop()


@pytest.fixture(scope="session")
def _migrated() -> Iterator[dict[str, Database]]:
    cache: dict[str, Database] = {}
    yield cache
    for database in cache.values():
        database.dispose()


def _truncate(db: Database) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with db.engine.begin() as conn:
        if db.is_sqlite:
            for name in tables:
                conn.execute(sa.text(f'DELETE FROM "{name}"'))
        else:
            joined = ", ".join(f'"{t}"' for t in tables)
            conn.execute(sa.text(f"TRUNCATE {joined} RESTART IDENTITY CASCADE"))


def _database(backend: str, request: pytest.FixtureRequest, cache: dict[str, Database]) -> Database:
    if backend not in cache:
        if backend == "sqlite":
            path = request.getfixturevalue("tmp_path_factory").mktemp("sqlite") / "hearth.db"
            db = Database(f"sqlite:///{path}")
        else:
            schema: PgSchema = request.getfixturevalue("_pg_schema")
            db = Database(schema.url)
        migrate.upgrade(db)
        cache[backend] = db
    db = cache[backend]
    _truncate(db)
    return db


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, _migrated: dict[str, Database]) -> Database:
    """A migrated, empty database: each test runs once on SQLite and once on PostgreSQL."""
    return _database(request.param, request, _migrated)


@pytest.fixture
def sqlite_db(request: pytest.FixtureRequest, _migrated: dict[str, Database]) -> Database:
    """A migrated, empty SQLite database, for tests where the backend does not matter."""
    return _database("sqlite", request, _migrated)


@pytest.fixture
def clock() -> FakeClock:
    # A Monday in January: no DST transition nearby in either hemisphere's usual zones.
    return FakeClock(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))


# Partners' words are sealed under this key in tests, as in any real deployment.
TEST_KEY = "nPq3nY0i8m9Yl7m5fGzqkKc1m2y3QWgxv5d1Y9Yj9Q8="


def make_settings(db: Database, **sections: Any) -> Settings:
    data: dict[str, Any] = {"database": {"url": db.url}, "encryption": {"keys": TEST_KEY}}
    data.update(sections)
    return Settings(**data)


@pytest.fixture
def settings(db: Database) -> Settings:
    return make_settings(db)


@pytest.fixture
def hearth(db: Database, settings: Settings, clock: FakeClock) -> Hearth:
    return Hearth(settings=settings, db=db, clock=clock)


@pytest.fixture
def sqlite_hearth(sqlite_db: Database, clock: FakeClock) -> Hearth:
    return Hearth(settings=make_settings(sqlite_db), db=sqlite_db, clock=clock)


class Cli:
    """Invokes ``hearth`` in-process against a given service context."""

    def __init__(self, hearth: Hearth) -> None:
        self.hearth = hearth
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(cli, list(args), obj=self.hearth, input=input)

    def ok(self, *args: str, input: str | None = None) -> Result:
        result = self(*args, input=input)
        assert result.exit_code == 0, f"{args}: exit {result.exit_code}\n{result.output}"
        return result


@pytest.fixture
def run(hearth: Hearth) -> Cli:
    """The CLI on both databases."""
    return Cli(hearth)


@pytest.fixture
def run_sqlite(sqlite_hearth: Hearth) -> Cli:
    """The CLI on SQLite only (behaviour that does not depend on the backend)."""
    return Cli(sqlite_hearth)


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: to assert that a refused command changed nothing."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with db.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = conn.execute(sa.select(table).order_by(*table.primary_key.columns)).all()
            out[table.name] = [tuple(r) for r in rows]
    return out


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
