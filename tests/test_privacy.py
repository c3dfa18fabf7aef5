"""Personal data stays where it belongs: erased for good on removal, files readable by
their owner only, no console channel printing numbers and bodies in production."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.channels import build_one
from service.core.clock import FakeClock
from service.core.config import Settings
from service.core.exceptions import ConsoleInProduction, InvalidInput
from service.db import migrate
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel
from service.domain import validation
from tests.conftest import Cli, make_settings
from tests.factories import couple_with_partners

VENV_BIN = Path(sys.executable).parent


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_couple_remove_leaves_nothing_readable_in_the_files(
    tmp_path: Path, clock: FakeClock
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'hearth.db'}")
    migrate.upgrade(db)
    hearth = Hearth(settings=make_settings(db), db=db, clock=clock)
    run = Cli(hearth)
    couple_with_partners(db, clock.now(), name="Zyxw & Vuts")
    run.ok("partner", "edit", "Sam", "--email", "q7-unique-sam@example.org")
    for i in range(3):  # some churn, so the pages exist in several versions
        run.ok("couple", "edit", "Zyxw & Vuts", "--timezone", ("UTC", "Europe/Berlin")[i % 2])
    files = [tmp_path / "hearth.db", tmp_path / "hearth.db-wal"]
    assert b"q7-unique-sam@example.org" in b"".join(f.read_bytes() for f in files if f.exists())
    run.ok("couple", "remove", "Zyxw & Vuts", "--yes")
    raw = b"".join(f.read_bytes() for f in tmp_path.iterdir() if f.name.startswith("hearth.db"))
    for personal in ("q7-unique-sam@example.org", "alice@example.org", "+4915123456789", "Zyxw"):
        assert personal.encode() not in raw, personal
    db.dispose()


def test_files_with_personal_data_are_the_owners_alone(tmp_path: Path) -> None:
    """Under a permissive umask, as a shell has it: init, db upgrade, export and backup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env["HEARTH_DATABASE_URL"] = f"sqlite:///{tmp_path / 'hearth.db'}"
    hearth = str(VENV_BIN / "hearth")

    def run(*args: str) -> None:
        subprocess.run(
            [hearth, *args],
            cwd=tmp_path,
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
            preexec_fn=lambda: os.umask(0o022),
        )

    run("init")
    run("db", "upgrade")
    run("couple", "add", "Alice & Sam", "-z", "UTC")
    run("export", "Alice & Sam", "-o", "export.json")
    run("backup", "backup.db")
    for name in ("hearth.toml", "hearth.db", "export.json", "backup.db"):
        assert _mode(tmp_path / name) == 0o600, name


@pytest.mark.parametrize("channel", list(Channel))
def test_console_channels_are_refused_in_production(channel: Channel, sqlite_db: Database) -> None:
    https = make_settings(sqlite_db, web={"public_base_url": "https://hearth.example.org"})
    with pytest.raises(ConsoleInProduction) as refused:
        build_one(https, channel)
    assert f"channels.{channel}: console prints full numbers" in str(refused.value)
    # Development (http) keeps the console.
    assert build_one(Settings(database={"url": sqlite_db.url}), channel).channel is channel


def test_serve_refuses_console_under_https(run_sqlite: Cli) -> None:
    hearth = run_sqlite.hearth
    settings = make_settings(hearth.db, web={"public_base_url": "https://hearth.example.org"})
    result = Cli(Hearth(settings=settings, db=hearth.db, clock=hearth.clock))("worker")
    assert result.exit_code == 2
    assert result.output.startswith("error: config: channels.sms: console prints full numbers")
    assert len(result.output.splitlines()) == 1


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (lambda v: validation.phone(v, "DE"), "+49 151 2345"),
        (lambda v: validation.phone(v, "US"), "call me maybe 0151"),
        (validation.email, "sam.private@@example.org"),
    ],
)
def test_refused_numbers_and_addresses_are_not_echoed_beyond_the_terminal(
    check: Any, value: str
) -> None:
    """The terminal line quotes what was typed; ``public`` (for an HTTP answer or a log
    line) says what is wrong without it."""
    with pytest.raises(InvalidInput) as refused:
        check(value)
    assert value in str(refused.value)
    assert value not in refused.value.public and "sam.private" not in refused.value.public
    assert refused.value.public.startswith(refused.value.field + ": not a ")
