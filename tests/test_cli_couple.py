from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import QueuePool

from cli.main import cli
from service.channels.base import Message, Receipt
from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.db import migrate
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Couple
from service.outbox import planner
from tests.conftest import Cli, PgSchema, make_settings, snapshot


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


PERSONAL = ("+4915123456789", "alice@example.org", "sam@example.org")


def _couple_with_everything(run: Cli, hearth: Hearth) -> None:
    """A couple with two partners (contacts, consent, a feed), a ritual and planned reminders."""
    run.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")
    run.ok(
        "partner",
        "add",
        "1",
        "Alice",
        "--phone",
        "+4915123456789",
        "--email",
        "alice@example.org",
        "--sms-consent",
        "signup form",
    )
    run.ok("partner", "add", "1", "Sam", "--email", "sam@example.org", "-z", "America/New_York")
    run.ok("ritual", "add", "1", "-t", "five-minute-check-in")
    run.ok("feed", "url", "Alice", "--no-qr")
    now = hearth.clock.now()
    planner.plan(hearth.db.write_engine, now, timedelta(hours=48), 30)


def test_remove_asks_and_erases(run: Cli, db: Database, hearth: Hearth) -> None:
    _couple_with_everything(run, hearth)
    before = snapshot(db)
    assert before["reminder"] and before["consent_record"]  # there is something to erase
    no = run("couple", "remove", "Alice & Sam", input="n\n")
    assert no.exit_code == 1 and "Remove couple 'Alice & Sam'" in no.output
    assert snapshot(db) == before

    yes = run("couple", "remove", "Alice & Sam", input="y\n")
    assert yes.exit_code == 0, yes.output
    assert "removed couple 1: Alice & Sam" in yes.output
    after = snapshot(db)
    for table in ("couple", "partner", "consent_record", "ritual", "reminder"):
        assert after[table] == [], table
    # The audit trail keeps ids only: nothing that identifies the partners is left anywhere.
    everything = repr(after)
    assert not [value for value in PERSONAL if value in everything]
    assert [row[2] for row in after["event"]][-1] == "couple.removed"


class _AnswerWhenAsked(io.BytesIO):
    """Standard input that runs ``check`` the moment the prompt reads the answer: what the
    command holds open then, it holds while a person sits at the question."""

    def __init__(self, answer: str, check: Callable[[], None]) -> None:
        super().__init__(answer.encode())
        self._check: Callable[[], None] | None = check

    def _asked(self, size: int | None) -> None:
        if size != 0 and self._check is not None:  # size 0: Click probing the stream
            check, self._check = self._check, None
            check()

    def read(self, size: int | None = -1, /) -> bytes:
        self._asked(size)
        return super().read(size)

    def read1(self, size: int | None = -1, /) -> bytes:
        self._asked(size)
        return super().read1(size)

    def readline(self, size: int | None = -1, /) -> bytes:
        self._asked(size)
        return super().readline(size)


@pytest.mark.parametrize(
    ("args", "gone"),
    [
        (("couple", "remove", "Alice & Sam"), "couple"),
        (("partner", "remove", "Sam"), "partner"),
        (("ritual", "remove", "Five-minute check-in", "--couple", "1"), "ritual"),
    ],
)
def test_remove_prompt_holds_no_transaction(
    run: Cli, db: Database, hearth: Hearth, args: tuple[str, ...], gone: str
) -> None:
    _couple_with_everything(run, hearth)
    seen: dict[str, object] = {}

    def while_asking() -> None:
        # No connection out of the pool: no transaction, on either backend.
        assert isinstance(db.engine.pool, QueuePool)
        seen["checked out"] = db.engine.pool.checkedout()
        if db.is_sqlite:
            # Another writer (the daemon, a second admin) gets the write lock at once:
            # timeout=0 fails immediately instead of waiting if anyone held it.
            assert db.engine.url.database
            other = sqlite3.connect(db.engine.url.database, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("UPDATE couple SET updated_at = updated_at")
                other.execute("ROLLBACK")
                seen["other writer"] = "ok"
            except sqlite3.OperationalError as exc:
                seen["other writer"] = str(exc)
            finally:
                other.close()

    stdin = _AnswerWhenAsked("y\n", while_asking)
    result = run.runner.invoke(cli, list(args), obj=hearth, input=stdin)
    assert result.exit_code == 0, result.output
    assert seen["checked out"] == 0
    if db.is_sqlite:
        assert seen["other writer"] == "ok"
    # The answer still counts: the write happened afterwards, in its own transaction.
    assert f"removed {gone}" in result.output
    if gone == "ritual":
        assert json.loads(run.ok("ritual", "show", "1", "--json").output)["ended_at"]
    else:
        assert len(snapshot(db)[gone]) == (0 if gone == "couple" else 1)


def test_send_test_holds_no_transaction_while_sending(
    run: Cli, db: Database, hearth: Hearth, monkeypatch: pytest.MonkeyPatch
) -> None:
    _couple_with_everything(run, hearth)
    held: list[int] = []
    real_send = ConsoleTransport.send

    def send(self: ConsoleTransport, message: Message) -> Receipt:
        # A provider can take its full timeout: nothing may be held open meanwhile.
        assert isinstance(db.engine.pool, QueuePool)
        held.append(db.engine.pool.checkedout())
        return real_send(self, message)

    monkeypatch.setattr(ConsoleTransport, "send", send)
    out = run.ok("send-test", "Sam", "--channel", "email").output
    assert "sent a test email to Sam" in out
    assert held == [0]


def test_removing_what_vanished_while_asked_is_refused(run: Cli, db: Database) -> None:
    run.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")

    def meanwhile() -> None:  # another admin removes it while this one is asked
        run.ok("couple", "remove", "1", "--yes")

    result = run.runner.invoke(
        cli, ["couple", "remove", "1"], obj=run.hearth, input=_AnswerWhenAsked("y\n", meanwhile)
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == "error: couple 1 not found"


def test_a_locked_database_is_one_line_and_exit_1(
    sqlite_db: Database, clock: FakeClock, tmp_path: Path
) -> None:
    # A second engine on the same file with a short lock timeout, so the test need not sit
    # out the 30 s a real run waits.
    impatient = Database(sqlite_db.url, lock_timeout=0.05)
    run = Cli(Hearth(settings=make_settings(impatient), db=impatient, clock=clock))
    run.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")
    assert sqlite_db.engine.url.database
    holder = sqlite3.connect(sqlite_db.engine.url.database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the daemon, mid-write
        before = snapshot(sqlite_db)
        result = run("couple", "add", "Bo & Kim", "-z", "UTC")
        assert result.exit_code == 1, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith("error: database sqlite:///") and "database is locked" in line
        # Reads take no write lock: they carry on while a writer holds it.
        assert "Alice & Sam" in run.ok("couple", "list").output
        assert "Alice & Sam" in run.ok("couple", "show", "1").output
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        impatient.dispose()
    assert snapshot(sqlite_db) == before


@pytest.mark.postgres
def test_a_write_blocked_on_postgres_gives_up_in_one_line(
    pg_schema: PgSchema, clock: FakeClock
) -> None:
    db = Database(pg_schema.url, lock_timeout=0.2)
    migrate.upgrade(db)
    run = Cli(Hearth(settings=make_settings(db), db=db, clock=clock))
    run.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")
    other = sa.create_engine(pg_schema.url)
    holder = other.connect()
    try:
        holder.begin()
        holder.execute(sa.text("LOCK TABLE couple IN EXCLUSIVE MODE"))  # reads still pass
        before = snapshot(db)
        result = run("couple", "add", "Bo & Kim", "-z", "UTC")
        assert result.exit_code == 1, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith("error: database postgresql") and "lock timeout" in line
        assert "Alice & Sam" in run.ok("couple", "list").output
    finally:
        holder.rollback()
        holder.close()
        other.dispose()
    assert snapshot(db) == before
    db.dispose()


def test_two_names_that_match_cannot_both_exist(run: Cli, db: Database, hearth: Hearth) -> None:
    run.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")
    # Not even written past the CLI: the unique name key is the database's own rule.
    with pytest.raises(sa.exc.IntegrityError), hearth.db.session() as s:
        now = hearth.clock.now()
        s.add(Couple(name="alice & sam", timezone="UTC", created_at=now, updated_at=now))
    assert run("couple", "add", "ALICE & SAM", "-z", "UTC").exit_code == 2


def test_partner_names_shared_across_couples_are_ambiguous(run: Cli, db: Database) -> None:
    run.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")
    run.ok("couple", "add", "Alice & Kim", "-z", "Europe/Berlin")
    run.ok("partner", "add", "1", "Alice", "--email", "a1@example.org")
    run.ok("partner", "add", "2", "Alice", "--email", "a2@example.org")
    before = snapshot(db)
    for args in (
        ("partner", "show", "alice"),
        ("partner", "edit", "Alice", "--quiet", "off"),
        ("partner", "remove", "Alice", "--yes"),
    ):
        result = run(*args)
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert line == (
            f"error: partner {args[2]!r} is ambiguous: matches "
            "1:Alice & Sam/Alice, 2:Alice & Kim/Alice; use the id"
        )
    assert snapshot(db) == before
    shown = json.loads(run.ok("partner", "show", "Alice & Kim/Alice", "--json").output)
    assert shown["email"] == "a2@example.org"


@pytest.mark.parametrize("until", ["9999-12-31", "9999-12-31 23:59", "10000-01-01"])
def test_pause_until_the_end_of_time_is_refused(run: Cli, db: Database, until: str) -> None:
    run.ok("couple", "add", "Alice & Sam", "-z", "America/New_York")
    run.ok("ritual", "add", "1", "-t", "five-minute-check-in")
    before = snapshot(db)
    for args in (("couple", "pause", "1"), ("ritual", "pause", "1")):
        result = run(*args, "--until", until)
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith("error: until: "), line
    assert "is too far ahead" in run("couple", "pause", "1", "--until", "9999-12-31").output
    assert snapshot(db) == before
    run.ok("couple", "pause", "1", "--until", "9998-12-31")  # the latest accepted


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("couple", "add"), "error: hearth couple add: Missing argument 'NAME'."),
        (
            ("ritual", "preview", "1", "--count", "abc"),
            "error: hearth ritual preview: Invalid value for '--count': "
            "'abc' is not a valid integer.",
        ),
        (("partner", "add", "1", "X", "--bogus"), "error: hearth partner add: No such option"),
        (("couple", "add", "X"), "error: hearth couple add: Missing option '--timezone'"),
        (("couple", "frobnicate"), "error: hearth couple: No such command 'frobnicate'."),
        (("--bogus",), "error: hearth: No such option"),
        (("prune", "--days", "0"), "error: hearth prune: Invalid value for '--days'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    run: Cli, db: Database, args: tuple[str, ...], message: str
) -> None:
    run.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")
    before = snapshot(db)
    result = run(*args)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(message), line
    assert snapshot(db) == before


def test_help_is_still_help(run: Cli) -> None:
    assert "Usage: hearth couple add" in run.ok("couple", "add", "--help").output
    bare = run("couple")  # a group without a command shows its commands
    assert "Commands:" in bare.output
