from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from service.core.clock import FakeClock
from service.db.engine import Database
from tests.conftest import Cli, snapshot


def _couple(run: Cli, tz: str = "Europe/Berlin") -> None:
    run.ok("couple", "add", "Alice & Sam", "-z", tz)


def test_partner_add_normalises_and_records_consent(run: Cli) -> None:
    _couple(run)
    out = run.ok(
        "partner",
        "add",
        "Alice & Sam",
        "Alice",
        "--phone",
        "(415) 555-0123",
        "--email",
        "Alice@Example.org",
        "--quiet",
        "22:00-07:30",
        "--sms-consent",
        "signup form",
    ).output
    assert "added partner 1: Alice to Alice & Sam (sms, email)" in out
    shown = json.loads(run.ok("partner", "show", "Alice", "--json").output)
    assert shown["phone"] == "+14155550123"
    assert shown["email"] == "Alice@example.org"
    assert shown["quiet_hours"] == "22:00-07:30"
    assert shown["sms_consent"] == "consented"
    assert [(h["state"], h["source"]) for h in shown["consent_history"]] == [
        ("consented", "signup form")
    ]
    text = run.ok("partner", "show", "Alice & Sam/Alice").output
    assert "consent" in text and "signup form" in text and "discreet" in text


def test_partner_edit_list_remove(run: Cli, db: Database) -> None:
    _couple(run)
    run.ok("partner", "add", "1", "Sam", "--email", "sam@example.org", "-z", "America/New_York")
    run.ok("partner", "edit", "Sam", "--quiet", "23:00-08:00", "--full-text")
    listed = json.loads(run.ok("partner", "list", "--json").output)
    assert [(p["name"], p["timezone"], p["quiet_hours"], p["full_text"]) for p in listed] == [
        ("Sam", "America/New_York", "23:00-08:00", True)
    ]
    assert "Sam" in run.ok("partner", "list", "--couple", "Alice & Sam").output
    run.ok("partner", "remove", "Sam", "--yes")
    assert snapshot(db)["partner"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--phone", "12"), "phone: '12' is not a valid number"),
        (("--email", "not-an-address"), "email:"),
        (("-z", "Europe/Berln"), "did you mean Europe/Berlin?"),
        (("--quiet", "22-7"), "quiet hours:"),
        (("--channels", "sms"), "channel: sms needs a phone number"),
        (("--channels", "pigeon"), "channel: unknown channel 'pigeon'"),
        (("--sms-consent", "web"), "sms consent: recorded without a phone number"),
    ],
)
def test_partner_refusals(run: Cli, db: Database, args: tuple[str, ...], message: str) -> None:
    _couple(run)
    before = snapshot(db)
    result = run("partner", "add", "Alice & Sam", "Alice", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert snapshot(db) == before


def test_third_partner_refused(run: Cli, db: Database) -> None:
    _couple(run)
    run.ok("partner", "add", "1", "A")
    run.ok("partner", "add", "1", "B")
    before = snapshot(db)
    result = run("partner", "add", "1", "C")
    assert result.exit_code == 2 and "already has two partners" in result.output
    assert snapshot(db) == before


def test_templates_list() -> None:
    from click.testing import CliRunner

    from cli.main import cli

    result = CliRunner().invoke(cli, ["templates", "list", "--json"])
    names = [t["name"] for t in json.loads(result.output)]
    assert "five-minute-check-in" in names and "anniversary" in names and "repair" in names


def test_ritual_from_template_and_by_hand(run: Cli) -> None:
    _couple(run)
    out = run.ok("ritual", "add", "Alice & Sam", "--template", "five-minute-check-in").output
    assert "added ritual 1: Five-minute check-in (21:00 Europe/Berlin, FREQ=DAILY)" in out
    data = json.loads(
        run.ok(
            "ritual",
            "add",
            "1",
            "--kind",
            "date_night",
            "--title",
            "Date night",
            "--at",
            "19:30",
            "--every",
            "weekly:FR",
            "--duration",
            "2h",
            "--remind",
            "0,1h",
            "--channel",
            "email",
            "--json",
        ).output
    )
    assert data["rrule"] == "FREQ=WEEKLY;BYDAY=FR"
    assert data["duration_minutes"] == 120
    assert data["remind_minutes_before"] == [60, 0]
    assert data["channels"] == ["email"]
    anniversary = json.loads(
        run.ok("ritual", "add", "1", "-t", "anniversary", "--on", "2019-06-14", "--json").output
    )
    assert anniversary["rrule"] == "FREQ=YEARLY;BYMONTH=6;BYMONTHDAY=14"
    listed = run.ok("ritual", "list", "--couple", "Alice & Sam").output
    assert "Date night" in listed and "active" in listed
    shown = json.loads(run.ok("ritual", "show", "date night", "--couple", "1", "--json").output)
    assert shown["id"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--template", "nope"), "template: unknown template 'nope'"),
        (("--template", "repair"), "repair conversations start on request"),
        (("--kind", "custom", "--title", "X"), "at: a ritual needs a time of day"),
        (("--kind", "custom", "--title", "X", "--at", "25:00", "--every", "daily"), "at:"),
        (
            ("--kind", "custom", "--title", "X", "--at", "9:00", "--rrule", "FREQ=HOURLY"),
            "rrule:",
        ),
        (
            ("--kind", "custom", "--title", "X", "--at", "9:00", "--rrule", "FREQ=DAILY;BYHOUR=9"),
            "rrule:",
        ),
        (("--kind", "custom", "--title", "X", "--at", "9:00", "--rrule", "EVERY=DAY"), "rrule:"),
        (("--kind", "custom", "--title", "X", "--at", "9:00", "--every", "fortnightly"), "every:"),
        (("--kind", "crying", "--title", "X", "--at", "9:00", "--every", "daily"), "kind:"),
        (("-t", "date-night", "-z", "Mars/Base"), "timezone: unknown timezone"),
        (("-t", "date-night", "--remind", "-5"), "remind:"),
        (
            (
                "-t",
                "anniversary",
            ),
            "on: an anniversary needs its date",
        ),
    ],
)
def test_ritual_refusals(run: Cli, db: Database, args: tuple[str, ...], message: str) -> None:
    _couple(run)
    before = snapshot(db)
    result = run("ritual", "add", "1", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert snapshot(db) == before


def test_skip_next_takes_the_next_occurrence_not_skipped_yet(run: Cli, db: Database) -> None:
    """`skip RITUAL next`: what a tour or a script can run on any day."""
    _couple(run)
    run.ok("ritual", "add", "1", "-t", "five-minute-check-in")
    out = run.ok("ritual", "skip", "Five-minute check-in", "next", "--couple", "1").output
    assert "skipped ritual 1 on Mon 2026-01-05 21:00 CET" in out  # tonight (it is noon)
    out = run.ok("ritual", "skip", "1", "NEXT").output
    assert "skipped ritual 1 on Tue 2026-01-06 21:00 CET" in out
    before = snapshot(db)
    bad = run("ritual", "skip", "1", "soon")
    assert (bad.exit_code, bad.output.strip()) == (
        2,
        "error: date: 'soon' is not a date (use YYYY-MM-DD)",
    )
    assert snapshot(db) == before


def test_skip_move_pause_remove(run: Cli, clock: FakeClock) -> None:
    _couple(run)
    run.ok("ritual", "add", "1", "-t", "five-minute-check-in")
    out = run.ok("ritual", "skip", "1", "2026-01-07").output
    assert "skipped ritual 1 on Wed 2026-01-07 21:00 CET" in out
    assert run("ritual", "skip", "1", "2026-01-07").exit_code == 2  # already skipped
    out = run.ok("ritual", "move", "1", "2026-01-08", "--to", "2026-01-08 22:15").output
    assert "to Thu 2026-01-08 22:15 CET" in out
    preview = json.loads(run.ok("ritual", "preview", "1", "--count", "4", "--json").output)
    starts = [(p["start"], p["moved"]) for p in preview]
    assert starts == [
        ("2026-01-05T20:00:00+00:00", False),
        ("2026-01-06T20:00:00+00:00", False),
        ("2026-01-08T21:15:00+00:00", True),
        ("2026-01-09T20:00:00+00:00", False),
    ]
    assert run("ritual", "skip", "1", "2026-01-01").exit_code == 2  # in the past
    assert "paused ritual 1 until" in run.ok("ritual", "pause", "1", "--until", "2026-02-01").output
    assert "paused" in run.ok("ritual", "list").output
    run.ok("ritual", "resume", "1")
    run.ok("ritual", "remove", "1", "--yes")
    assert "(none)" in run.ok("ritual", "list").output
    assert "removed" in run.ok("ritual", "list", "--all").output


def _local(entry: dict[str, Any], who: str) -> str:
    """'HH:MM ZONE' of one column of a preview entry ("couple" or a partner's name)."""
    (column,) = [
        z
        for z in entry["local"]
        if (z["partner_id"] is None if who == "couple" else z["name"] == who)
    ]
    time_and_zone: str = column["time"].split(" ", 2)[2]
    return time_and_zone


def test_preview_across_dst_in_each_partners_zone(run_sqlite: Cli, clock: FakeClock) -> None:
    run = run_sqlite
    clock.set(datetime(2026, 3, 26, 12, 0, tzinfo=UTC))
    _couple(run)
    run.ok("partner", "add", "1", "Alice")
    run.ok("partner", "add", "1", "Sam", "-z", "America/New_York")
    run.ok("ritual", "add", "1", "-t", "five-minute-check-in")
    data = json.loads(run.ok("ritual", "preview", "--couple", "1", "--count", "4", "--json").output)
    # Berlin moves to summer time on 29 March, New York already did on 8 March: for a week
    # the partners are 5 hours apart, then 6 again; each sees the time on their own clock.
    assert [d["start"] for d in data] == [
        "2026-03-26T20:00:00+00:00",
        "2026-03-27T20:00:00+00:00",
        "2026-03-28T20:00:00+00:00",
        "2026-03-29T19:00:00+00:00",
    ]
    assert [_local(d, "Alice") for d in data] == ["21:00 CET"] * 3 + ["21:00 CEST"]
    assert [_local(d, "couple") for d in data] == ["21:00 CET"] * 3 + ["21:00 CEST"]
    assert [_local(d, "Sam") for d in data] == ["16:00 EDT"] * 3 + ["15:00 EDT"]
    table = run.ok("ritual", "preview", "--couple", "1", "--count", "2").output
    assert "Alice" in table and "Sam" in table and "couple" in table


def test_preview_across_the_autumn_changes_in_each_partners_zone(
    run_sqlite: Cli, clock: FakeClock
) -> None:
    run = run_sqlite
    clock.set(datetime(2026, 10, 23, 12, 0, tzinfo=UTC))
    _couple(run)
    run.ok("partner", "add", "1", "Alice")
    run.ok("partner", "add", "1", "Sam", "-z", "America/New_York")
    run.ok("ritual", "add", "1", "-t", "five-minute-check-in")
    data = json.loads(run.ok("ritual", "preview", "1", "--count", "10", "--json").output)
    # Berlin leaves summer time on 25 October, New York a week later on 1 November: for that
    # week the partners are 5 hours apart instead of 6. 21:00 in Berlin stays 21:00; Sam's
    # evening check-in moves from 15:00 to 16:00 and back to 15:00.
    assert [d["start"][:16] for d in data] == (
        ["2026-10-23T19:00", "2026-10-24T19:00"]
        + [f"2026-10-{day}T20:00" for day in range(25, 32)]
        + ["2026-11-01T20:00"]
    )
    assert [_local(d, "Alice") for d in data] == ["21:00 CEST"] * 2 + ["21:00 CET"] * 8
    assert [_local(d, "couple") for d in data] == ["21:00 CEST"] * 2 + ["21:00 CET"] * 8
    assert [_local(d, "Sam") for d in data] == (
        ["15:00 EDT"] * 2 + ["16:00 EDT"] * 7 + ["15:00 EST"]
    )
    # Each column is that zone's own calendar date too.
    assert [z["time"][:14] for z in data[-1]["local"]] == ["Sun 2026-11-01"] * 3


def test_preview_marks_paused_occurrences(run: Cli) -> None:
    _couple(run)
    run.ok("partner", "add", "1", "Alice")
    run.ok("ritual", "add", "1", "-t", "five-minute-check-in")  # 21:00 daily, Berlin

    def paused() -> list[tuple[str, bool]]:
        data = json.loads(run.ok("ritual", "preview", "1", "--count", "4", "--json").output)
        return [(d["start"][:10], d["paused"]) for d in data]

    assert paused() == [
        ("2026-01-05", False),
        ("2026-01-06", False),
        ("2026-01-07", False),
        ("2026-01-08", False),
    ]
    # The ritual's own pause: through Wednesday, so Thursday is nudged again.
    run.ok("ritual", "pause", "1", "--until", "2026-01-07")
    assert paused() == [
        ("2026-01-05", True),
        ("2026-01-06", True),
        ("2026-01-07", True),
        ("2026-01-08", False),
    ]
    table = run.ok("ritual", "preview", "1", "--count", "4").output.splitlines()
    assert ["(paused: no nudge)" in line for line in table[2:]] == [True, True, True, False]
    run.ok("ritual", "resume", "1")
    # The couple's pause covers every ritual of theirs.
    run.ok("couple", "pause", "1", "--until", "2026-01-06")
    assert paused() == [
        ("2026-01-05", True),
        ("2026-01-06", True),
        ("2026-01-07", False),
        ("2026-01-08", False),
    ]
    run.ok("couple", "resume", "1")
    assert not any(p for _, p in paused())


def test_preview_keeps_partners_apart_whatever_their_names(run: Cli) -> None:
    _couple(run)
    run.ok("partner", "add", "1", "couple", "-z", "Asia/Tokyo")
    run.ok("partner", "add", "1", "Sam", "-z", "America/New_York")
    run.ok("ritual", "add", "1", "-t", "five-minute-check-in")
    (entry,) = json.loads(run.ok("ritual", "preview", "1", "--count", "1", "--json").output)
    assert [(z["partner_id"], z["name"], z["timezone"], z["time"]) for z in entry["local"]] == [
        (None, "Alice & Sam", "Europe/Berlin", "Mon 2026-01-05 21:00 CET"),
        (1, "couple", "Asia/Tokyo", "Tue 2026-01-06 05:00 JST"),
        (2, "Sam", "America/New_York", "Mon 2026-01-05 15:00 EST"),
    ]
    header = run.ok("ritual", "preview", "1", "--count", "1").output.splitlines()[0]
    assert [h.strip() for h in header.split("┃")] == [
        "id",
        "ritual",
        "couple",
        "couple #1",
        "Sam",
        "reminders (couple)",
    ]
    row = run.ok("ritual", "preview", "1", "--count", "1").output.splitlines()[-1]
    assert "CET" in row and "JST" in row and "EST" in row


def test_ritual_titles_shared_are_ambiguous(run: Cli, db: Database) -> None:
    _couple(run)
    run.ok("ritual", "add", "1", "-t", "date-night")
    run.ok("ritual", "add", "1", "-t", "date-night", "--at", "20:00")
    before = snapshot(db)
    for args in (
        ("ritual", "show", "date night"),
        ("ritual", "skip", "Date night", "2026-01-09"),
        ("ritual", "remove", "Date night", "--yes"),
    ):
        result = run(*args, "--couple", "1")
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert line == (
            f"error: ritual {args[2]!r} is ambiguous: matches 1:Date night, 2:Date night; "
            "use the id"
        )
    assert snapshot(db) == before
    run.ok("ritual", "remove", "1", "--yes")
    # Removed rituals do not count: the title names one again.
    assert (
        json.loads(run.ok("ritual", "show", "Date night", "--couple", "1", "--json").output)["id"]
        == 2
    )


def test_moving_onto_another_occurrence_is_refused(run: Cli, db: Database) -> None:
    _couple(run)
    run.ok("ritual", "add", "1", "-t", "five-minute-check-in")  # 21:00 daily, Berlin
    before = snapshot(db)
    result = run("ritual", "move", "1", "2026-01-08", "--to", "2026-01-09 21:00")
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: to: another occurrence of ritual 1 already starts then")
    assert snapshot(db) == before
    # Not onto one moved there either; a skipped slot is free, and a minute apart is fine.
    run.ok("ritual", "move", "1", "2026-01-10", "--to", "2026-01-10 22:00")
    assert run("ritual", "move", "1", "2026-01-08", "--to", "2026-01-10 22:00").exit_code == 2
    run.ok("ritual", "skip", "1", "2026-01-09")
    run.ok("ritual", "move", "1", "2026-01-08", "--to", "2026-01-09 21:00")
    run.ok("ritual", "move", "1", "2026-01-11", "--to", "2026-01-12 21:01")


@pytest.mark.parametrize(
    ("rrule", "message"),
    [
        ("FREQ=MONTHLY;BYMONTHDAY=0", "rrule: BYMONTHDAY=0 is out of range"),
        ("FREQ=MONTHLY;BYMONTHDAY=32", "rrule: BYMONTHDAY=32 is out of range"),
        ("FREQ=MONTHLY;BYMONTHDAY=-32", "rrule: BYMONTHDAY=-32 is out of range"),
        ("FREQ=YEARLY;BYMONTH=13", "rrule: BYMONTH=13 is out of range"),
        ("FREQ=YEARLY;BYMONTH=0", "rrule: BYMONTH=0 is out of range"),
        ("FREQ=YEARLY;BYMONTH=-1", "rrule: BYMONTH=-1 is out of range"),
        ("FREQ=YEARLY;BYYEARDAY=367", "rrule: BYYEARDAY=367 is out of range"),
        ("FREQ=YEARLY;BYWEEKNO=54", "rrule: BYWEEKNO=54 is out of range"),
        ("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=0", "rrule: BYSETPOS=0 is out of range"),
        ("FREQ=MONTHLY;BYDAY=MO;BYSETPOS=367", "rrule: BYSETPOS=367 is out of range"),
        ("FREQ=MONTHLY;BYSETPOS=1", "rrule: BYSETPOS does not go with FREQ=MONTHLY"),
        ("FREQ=WEEKLY;BYDAY=XX", "rrule: BYDAY=XX is not a weekday"),
        ("FREQ=WEEKLY;BYDAY=MO,", "rrule: BYDAY=MO, has an empty item"),
        ("FREQ=MONTHLY;BYDAY=0MO", "rrule: BYDAY=0MO is out of range"),
        ("FREQ=MONTHLY;BYDAY=6MO", "rrule: BYDAY=6MO is out of range"),
        ("FREQ=MONTHLY;BYDAY=-MO", "rrule: BYDAY=-MO has a sign without a number"),
        ("FREQ=WEEKLY;BYDAY=1MO", "rrule: BYDAY=1MO: a numbered weekday needs FREQ=MONTHLY"),
        ("FREQ=WEEKLY;BYMONTHDAY=1", "rrule: BYMONTHDAY does not go with FREQ=WEEKLY"),
        ("FREQ=MONTHLY;BYWEEKNO=1", "rrule: BYWEEKNO does not go with FREQ=MONTHLY"),
        ("FREQ=DAILY;BYYEARDAY=1", "rrule: BYYEARDAY does not go with FREQ=DAILY"),
        ("FREQ=DAILY;COUNT=3;UNTIL=20270101", "rrule: COUNT and UNTIL cannot both be given"),
        ("FREQ=DAILY;;", "rrule: 'FREQ=DAILY;;' has an empty part"),
        ("FREQ=DAILY;", "rrule: 'FREQ=DAILY;' has an empty part"),
        ("FREQ=DAILY;;COUNT=3", "rrule: 'FREQ=DAILY;;COUNT=3' has an empty part"),
        ("FREQ=DAILY;COUNT", "rrule: 'COUNT' is not NAME=VALUE"),
        ("FREQ=DAILY;COUNT=0", "rrule: COUNT=0 is out of range"),
        ("FREQ=DAILY;INTERVAL=0", "rrule: INTERVAL=0 is out of range"),
        ("FREQ=DAILY;INTERVAL=x", "rrule: INTERVAL=X is not a whole number"),
        ("FREQ=DAILY;UNTIL=tomorrow", "rrule: UNTIL=TOMORROW is not a date"),
        ("FREQ=DAILY;UNTIL=99991231", "rrule: UNTIL=99991231 is too far ahead"),
        ("FREQ=DAILY;INTERVAL=" + "9" * 5000, "rrule: INTERVAL=999"),
        ("FREQ=DAILY;FREQ=WEEKLY", "rrule: FREQ is given twice"),
        ("FREQ=FORTNIGHTLY", "rrule: FREQ=FORTNIGHTLY is not a frequency"),
        ("FREQ=MINUTELY", "rrule: a ritual happens at most daily"),
        ("FREQ=DAILY;BYMINUTE=5", "rrule: BYMINUTE is not allowed"),
        ("FREQ=DAILY;WKST=XY", "rrule: WKST=XY is not a weekday"),
        ("FREQ=DAILY;COLOR=RED", "rrule: unknown part COLOR"),
        ("BYDAY=MO", "rrule: 'BYDAY=MO' has no FREQ"),
    ],
)
def test_invalid_rrules_are_refused(run: Cli, db: Database, rrule: str, message: str) -> None:
    _couple(run)
    run.ok("ritual", "add", "1", "-t", "date-night")
    before = snapshot(db)
    for args in (
        ("ritual", "add", "1", "--kind", "custom", "--title", "X", "--at", "9:00"),
        ("ritual", "edit", "1"),
    ):
        result = run(*args, "--rrule", rrule)
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith(f"error: {message}"), line
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("rrule", "stored"),
    [
        ("rrule:freq=weekly;byday=fr", "FREQ=WEEKLY;BYDAY=FR"),
        ("BYDAY=+1SA;FREQ=MONTHLY", "FREQ=MONTHLY;BYDAY=1SA"),
        ("FREQ=MONTHLY;BYMONTHDAY=07,-1,7", "FREQ=MONTHLY;BYMONTHDAY=7,-1"),
        (" FREQ=DAILY ; INTERVAL=02 ; COUNT=30 ", "FREQ=DAILY;INTERVAL=2;COUNT=30"),
        ("FREQ=YEARLY;BYMONTH=+6;BYDAY=-1SU", "FREQ=YEARLY;BYMONTH=6;BYDAY=-1SU"),
        (
            "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
            "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
        ),
        ("FREQ=WEEKLY;UNTIL=20261231;WKST=SU", "FREQ=WEEKLY;UNTIL=20261231;WKST=SU"),
    ],
)
def test_valid_rrules_are_stored_normalised(run: Cli, rrule: str, stored: str) -> None:
    _couple(run)
    data = json.loads(
        run.ok(
            "ritual",
            "add",
            "1",
            "--kind",
            "custom",
            "--title",
            "X",
            "--at",
            "9:00",
            "--rrule",
            rrule,
            "--json",
        ).output
    )
    assert data["rrule"] == stored


def test_a_monthly_rule_expands_monthly(run: Cli) -> None:
    _couple(run)
    run.ok(
        "ritual",
        "add",
        "1",
        "--kind",
        "custom",
        "--title",
        "X",
        "--at",
        "9:00",
        "--rrule",
        "FREQ=MONTHLY;BYMONTHDAY=-1",
    )
    data = json.loads(run.ok("ritual", "preview", "1", "--count", "3", "--json").output)
    assert [d["start"][:10] for d in data] == ["2026-01-31", "2026-02-28", "2026-03-31"]


def test_every_write_records_an_event(run: Cli, db: Database) -> None:
    _couple(run)
    run.ok("partner", "add", "1", "Alice", "--email", "a@example.org")
    run.ok("ritual", "add", "1", "-t", "five-minute-check-in")
    run.ok("ritual", "edit", "1", "--at", "21:30")
    run.ok("ritual", "skip", "1", "2026-01-07")
    types = [row[2] for row in snapshot(db)["event"]]
    assert types == [
        "couple.added",
        "partner.added",
        "ritual.added",
        "ritual.changed",
        "occurrence.skipped",
    ]


def test_a_removed_ritual_cannot_be_edited_paused_or_resumed(run: Cli, db: Database) -> None:
    _couple(run)
    run.ok("ritual", "add", "1", "-t", "five-minute-check-in")
    run.ok("ritual", "remove", "1", "--yes")
    before = snapshot(db)
    for args in (("edit", "1", "--title", "Z"), ("pause", "1"), ("resume", "1")):
        result = run("ritual", *args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.strip() == "error: ritual 1 was already removed"
    assert snapshot(db) == before


def test_a_start_date_before_1970_is_refused(run: Cli, db: Database) -> None:
    _couple(run)
    before = snapshot(db)
    result = run("ritual", "add", "1", "-t", "five-minute-check-in", "--on", "0001-01-01")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: on: '0001-01-01' is too long ago (the earliest is 1970-01-01)"
    )
    assert snapshot(db) == before
