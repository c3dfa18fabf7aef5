"""The Alembic migrations build exactly the schema the models describe, on both databases,
and every step can be walked down and up again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from service.core.exceptions import SchemaBehind
from service.db import migrate
from service.db.engine import Database
from service.db.models import Base
from tests.conftest import PgSchema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database of its own (the shared ``db`` fixture must stay migrated)."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
        yield db
        db.dispose()
        return
    schema: PgSchema = request.getfixturevalue("pg_schema")
    db = Database(schema.url)
    yield db
    db.dispose()


def _diff(db: Database) -> list[object]:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def _tables(db: Database) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_the_migrated_schema_is_the_models_schema(fresh: Database) -> None:
    migrate.upgrade(fresh)
    assert migrate.is_current(fresh)
    assert _diff(fresh) == []
    assert _tables(fresh) == set(Base.metadata.tables)


def test_every_migration_goes_down_and_up_again(fresh: Database) -> None:
    migrate.upgrade(fresh)
    migrate.downgrade(fresh, "base")
    assert _tables(fresh) == set()
    assert migrate.current(fresh) is None
    migrate.upgrade(fresh)
    assert _diff(fresh) == []


def test_a_database_behind_the_code_is_refused(fresh: Database) -> None:
    migrate.upgrade(fresh, "0001")
    assert migrate.is_behind(fresh)
    with pytest.raises(SchemaBehind, match="run `hearth db upgrade`"):
        migrate.require_current(fresh)


def test_upgrading_twice_changes_nothing(fresh: Database) -> None:
    migrate.upgrade(fresh)
    head = migrate.current(fresh)
    migrate.upgrade(fresh)
    assert migrate.current(fresh) == head == migrate.head()


def test_a_database_ahead_of_the_code_is_not_behind(fresh: Database) -> None:
    """During a rolling upgrade an old process meets a newer release's revision: it keeps
    running (migrations are additive) instead of asking for an upgrade it cannot do."""
    migrate.upgrade(fresh)
    assert not migrate.is_behind(fresh)
    with fresh.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    assert not migrate.is_behind(fresh)
    migrate.require_current(fresh)  # no SchemaBehind
