"""Schema migrations through Alembic, driven from code (``hearth db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.core.exceptions import SchemaBehind
from service.db.engine import Database

_SCRIPTS = Path(__file__).parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    cfg = _config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(db: Database, revision: str) -> None:
    cfg = _config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def head() -> str:
    head_rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert head_rev is not None
    return head_rev


def current(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_current(db: Database) -> bool:
    return current(db) == head()


def is_behind(db: Database) -> bool:
    """True when the database lacks migrations this code needs. A revision this code does not
    know is a newer release's: migrations are additive within a minor version, so an older
    process keeps running during a rolling upgrade."""
    rev = current(db)
    if rev is None:
        return True
    script = ScriptDirectory.from_config(_config())
    known = {r.revision for r in script.walk_revisions()}
    return rev in known and rev != head()


def require_current(db: Database) -> None:
    """Refuse to run against a database the code's migrations have not reached."""
    db.check()
    if is_behind(db):
        raise SchemaBehind(current(db), head())
