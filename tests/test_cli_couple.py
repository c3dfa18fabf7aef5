from __future__ import annotations

import json
from datetime import timedelta

import pytest

from service.clock import FakeClock
from service.db import Database
from tests.conftest import Cli, snapshot


def test_add_list_show_json(run: Cli) -> None:
    out = run.ok("couple", "add", "Alice & Sam", "--timezone", "Europe/Berlin").output
    assert "added couple 1: Alice & Sam (Europe/Berlin)" in out
    listed = json.loads(run.ok("couple", "list", "--json").output)
    assert [(c["id"], c["name"], c["timezone"]) for c in listed] == [
        (1, "Alice & Sam", "Europe/Berlin")
    ]
    table = run.ok("couple", "list").output
    assert "Alice & Sam" in table and "active" in table
    shown = json.loads(run.ok("couple", "show", "alice & sam", "--json").output)
    assert shown["id"] == 1


def test_edit_pause_resume(run: Cli, clock: FakeClock) -> None:
    run.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")
    run.ok("couple", "edit", "1", "--name", "A & S", "--timezone", "America/New_York")
    assert "America/New_York" in run.ok("couple", "show", "A & S").output
    out = run.ok("couple", "pause", "1", "--until", "2026-02-01").output
    # A date pauses through the end of that local day.
    assert "until Mon 2026-02-02 00:00 EST" in out
    assert "paused" in run.ok("couple", "list").output
    run.ok("couple", "resume", "1")
    assert "active" in run.ok("couple", "list").output
    clock.advance(timedelta(days=1))
    assert run("couple", "resume", "1").exit_code == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("couple", "add", "X", "-z", "Mars/Olympus"), "timezone: unknown timezone 'Mars/Olympus'"),
        (("couple", "add", "X", "-z", "Berlin"), "did you mean Europe/Berlin?"),
        (("couple", "add", " ", "-z", "UTC"), "couple name: must not be empty"),
        (("couple", "add", "Alice & Sam", "-z", "UTC"), "'Alice & Sam' is already taken"),
        (("couple", "show", "nobody"), "couple 'nobody' not found"),
        (("couple", "pause", "1", "--until", "2020-01-01"), "until: is in the past"),
        (("couple", "pause", "1", "--until", "tomorrow"), "until: 'tomorrow' is not a date"),
        (("couple", "edit", "1"), "nothing to change"),
        (("couple", "resume", "1"), "is not paused"),
    ],
)
def test_refusals_exit_2_and_change_nothing(
    run: Cli, db: Database, args: tuple[str, ...], message: str
) -> None:
    run.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")
    before = snapshot(db)
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert snapshot(db) == before


def test_remove_asks_and_erases(run: Cli, db: Database) -> None:
    run.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")
    before = snapshot(db)
    assert run("couple", "remove", "1", input="n\n").exit_code == 1
    assert snapshot(db) == before
    run.ok("couple", "remove", "1", "--yes")
    assert snapshot(db)["couple"] == []
    types = [row[2] for row in snapshot(db)["event"]]
    assert types == ["couple.added", "couple.removed"]
