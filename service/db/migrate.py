"""Schema migrations through Alembic, driven from code (``hearth db upgrade``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.core.exceptions import InvalidInput, SchemaBehind
from service.core.text import echo
from service.db.engine import Database

_SCRIPTS = Path(__file__).parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    check_target(db, revision)
    with _migrating(db) as cfg:
        command.upgrade(cfg, revision)


def downgrade(db: Database, revision: str) -> None:
    with _migrating(db) as cfg:
        command.downgrade(cfg, revision)


@contextmanager
def _migrating(db: Database) -> Iterator[Config]:
    """One transaction for the migrations. On SQLite with foreign keys off meanwhile: batch
    mode rebuilds a table by copy, drop and rename, and the drop of ``couple`` with foreign
    keys on would cascade into every partner, ritual and reminder (SQLite's own advice for
    table rebuilds; the pragma is a no-op inside a transaction, so it is set before)."""
    cfg = _config()
    with db.engine.connect() as conn:
        raw = conn.connection.driver_connection if db.is_sqlite else None
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                yield cfg
                if raw is not None:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                    assert broken is None, f"migration left a dangling reference: {broken}"
        finally:
            if raw is not None:
                raw.execute("PRAGMA foreign_keys=ON")


def check_target(db: Database, revision: str) -> None:
    """``revision`` is ``head`` or a known revision not behind the database's: an upgrade
    never goes back (alembic would quietly do nothing, or fail on a typo with a traceback)."""
    order = [
        r.revision for r in reversed(list(ScriptDirectory.from_config(_config()).walk_revisions()))
    ]
    if revision == "head":
        return
    if revision not in order:
        raise InvalidInput(
            "revision", f"unknown revision {echo(revision)}", f"one of {', '.join(order)} or head"
        )
    now = current(db)
    if now in order and order.index(revision) < order.index(now):
        raise InvalidInput(
            "revision",
            f"{revision} is behind the database's {now}",
            "upgrade never goes back; restore a backup to return to an older release",
        )


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
