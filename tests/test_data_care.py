"""Export, erasure, retention and backup: what Hearth keeps, hands over and forgets."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from service.calendar import feed_keep, feed_tokens
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, DeliveryStat, Event, Reminder, ReminderState, Reply
from service.domain import partners
from service.outbox import retention
from service.web.page import tokens as page_tokens
from tests.conftest import Cli, make_settings, snapshot
from tests.factories import check_in_sent
from tests.test_replies import reply

PERSONAL = ("+4915123456789", "alice@example.org", "sam@example.org", "Alice", "Sam")


def _dump(db: Database) -> str:
    return json.dumps(snapshot(db), default=str)


def test_export_holds_everything_but_secrets(hearth: Hearth, db: Database, run: Cli) -> None:
    check_in_sent(hearth)
    reply(hearth, "done")
    with db.session() as s:
        alice_p = partners.resolve(s, "Alice")
        page = page_tokens.issue(s, hearth.clock.now(), alice_p, hearth.keys)
        token = feed_keep.recover(alice_p, hearth.keys)
    assert token is not None
    out = json.loads(run.ok("export", "Alice & Sam").output)
    assert out["format"] == "hearth-export/1"
    assert out["couple"]["name"] == "Alice & Sam"
    alice = next(p for p in out["partners"] if p["name"] == "Alice")
    assert alice["phone"] == "+4915123456789" and alice["email"] == "alice@example.org"
    assert [c["source"] for c in out["consent_records"]] == ["signup form"]
    assert [r["title"] for r in out["rituals"]] == ["Five-minute check-in"]
    assert len(out["reminders"]) >= 3 and {r["state"] for r in out["reminders"]} >= {"sent"}
    assert [r["body"] for r in out["replies"]] == ["done"]
    assert len(out["check_ins"]) == 1
    assert "couple.added" in [e["type"] for e in out["events"]]
    text = json.dumps(out)
    assert token not in text and feed_tokens.digest(token) not in text
    assert "feed_token_hash" not in alice and "unsubscribe_token" not in alice
    assert page not in text and page_tokens.digest(page) not in text
    assert "page_token_hash" not in alice and "feed_token_kept" not in alice


def test_export_to_a_file_and_refusals(
    sqlite_hearth: Hearth, run_sqlite: Cli, tmp_path: Path
) -> None:
    check_in_sent(sqlite_hearth)
    target = tmp_path / "alice-sam.json"
    run_sqlite.ok("export", "Alice & Sam", "-o", str(target))
    assert json.loads(target.read_text())["couple"]["name"] == "Alice & Sam"
    missing = run_sqlite("export", "Nobody")
    assert missing.exit_code == 2 and "'Nobody' not found" in missing.output


def test_remove_erases_personal_data_and_keeps_counts(
    hearth: Hearth, db: Database, run: Cli
) -> None:
    check_in_sent(hearth)
    reply(hearth, "hello there")
    assert any(value in _dump(db) for value in PERSONAL)
    run.ok("couple", "remove", "Alice & Sam", "--yes")
    dump = _dump(db)
    for value in PERSONAL:
        assert value not in dump, value
    with db.session() as s:
        counts = {(d.channel, d.state): d.count for d in s.scalars(sa.select(DeliveryStat))}
        assert s.scalar(sa.select(sa.func.count()).select_from(Reminder)) == 0
    sent = ReminderState.SENT
    assert counts[(Channel.SMS, sent)] == 1 and counts[(Channel.EMAIL, sent)] == 2


def test_prune_keeps_recent_rows_and_counts_what_goes(
    hearth: Hearth, db: Database, clock: FakeClock, run: Cli
) -> None:
    check_in_sent(hearth)  # three nudges sent on 5 January
    reply(hearth, "hello")
    clock.advance(timedelta(days=40))
    reply(hearth, "still here")  # a recent reply stays
    with db.session() as s:
        pending = s.scalar(
            sa.select(sa.func.count())
            .select_from(Reminder)
            .where(Reminder.state == ReminderState.SCHEDULED)
        )
    out = json.loads(run.ok("prune", "--days", "30", "--json").output)
    assert out["reminders"] == 3 and out["replies"] == 1 and out["events"] > 0
    with db.session() as s:
        assert [hearth.keys.open(r.body) for r in s.scalars(sa.select(Reply))] == ["still here"]
        states = [r.state for r in s.scalars(sa.select(Reminder))]
        assert states.count(ReminderState.SCHEDULED) == pending  # unsent rows are never pruned
        assert ReminderState.SENT not in states
        assert sum(d.count for d in s.scalars(sa.select(DeliveryStat))) == 3
        oldest = s.scalar(sa.select(sa.func.min(Event.created_at)))
        assert oldest is not None and oldest >= clock.now() - timedelta(days=30)
    again = json.loads(run.ok("prune", "--days", "30", "--json").output)
    assert again == {"reminders": 0, "replies": 0, "answers": 0, "events": 0}
    assert run("prune", "--days", "0").exit_code == 2


def test_prune_in_small_chunks_removes_and_counts_the_same(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    """Chunks of two rows, one transaction each: three sent reminders, a reply and the
    events all go, and each reminder is counted into the stats once."""
    check_in_sent(hearth)
    reply(hearth, "hello")
    with db.session() as s:
        events = s.scalar(sa.select(sa.func.count()).select_from(Event))
    assert events is not None and events > 2
    clock.advance(timedelta(days=40))
    removed = retention.prune_in_chunks(db, clock.now(), 30, chunk=2)
    assert removed == {"reminders": 3, "replies": 1, "answers": 0, "events": events}
    with db.session() as s:
        assert sum(d.count for d in s.scalars(sa.select(DeliveryStat))) == 3
        assert s.scalar(sa.select(sa.func.count()).select_from(Event)) == 0
    again = retention.prune_in_chunks(db, clock.now(), 30, chunk=2)
    assert again == {"reminders": 0, "replies": 0, "answers": 0, "events": 0}


def test_backup_copies_a_live_sqlite_database(
    hearth: Hearth, db: Database, run: Cli, tmp_path: Path
) -> None:
    check_in_sent(hearth)
    target = tmp_path / "backup.db"
    result = run("backup", str(target))
    if db.url.startswith("postgresql"):
        assert result.exit_code == 2 and "pg_dump" in result.output
        assert not target.exists()
        return
    assert result.exit_code == 0 and f"backed up to {target}" in result.output
    with sqlite3.connect(target) as copy:
        assert copy.execute("SELECT name FROM couple").fetchall() == [("Alice & Sam",)]
        assert copy.execute("SELECT count(*) FROM reminder WHERE state='sent'").fetchone() == (3,)
    again = run("backup", str(target))
    assert again.exit_code == 2 and "already exists" in again.output
    nowhere = run("backup", str(tmp_path / "no" / "such" / "dir.db"))
    assert nowhere.exit_code == 2 and "does not exist" in nowhere.output


def test_export_to_an_unwritable_place_is_one_line(run_sqlite: Cli, tmp_path: Path) -> None:
    run_sqlite.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")
    result = run_sqlite("export", "Alice & Sam", "-o", str(tmp_path / "no" / "dir" / "x.json"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: --output: cannot write {tmp_path / 'no' / 'dir' / 'x.json'}: "
        "No such file or directory"
    ]


def _bare(tmp_path: Path, clock: FakeClock, name: str) -> Cli:
    """The CLI on a SQLite path with no Hearth schema (a typo, or `db upgrade` forgotten)."""
    db = Database(f"sqlite:///{tmp_path / name}")
    return Cli(Hearth(settings=make_settings(db), db=db, clock=clock))


def test_backup_and_prune_refuse_a_database_without_hearth(
    tmp_path: Path, clock: FakeClock
) -> None:
    missing = _bare(tmp_path, clock, "typo.db")("backup", str(tmp_path / "copy.db"))
    assert missing.exit_code == 2
    assert f"{tmp_path / 'typo.db'} does not exist" in missing.output
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "copy.db").exists()
    sqlite3.connect(tmp_path / "empty.db").close()
    empty = _bare(tmp_path, clock, "empty.db")
    for args in (("backup", str(tmp_path / "copy.db")), ("prune",)):
        result = empty(*args)
        assert result.exit_code == 1, result.output
        assert "run `hearth db upgrade`" in result.output
    assert not (tmp_path / "copy.db").exists()


def test_backup_into_an_unwritable_directory_is_one_line(run_sqlite: Cli) -> None:
    # /proc refuses new files even to root, where a chmod'ed directory would not.
    result = run_sqlite("backup", "/proc/hearth-backup.db")
    assert result.exit_code == 2
    assert result.output.startswith("error: destination: cannot write /proc/hearth-backup.db")
    assert len(result.output.strip().splitlines()) == 1
