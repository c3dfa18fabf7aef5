from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from service.clock import FakeClock
from service.db import Database
from tests.conftest import Cli, snapshot


def _couple(run: Cli, tz: str = "Europe/Berlin") -> None:
    run.ok("couple", "add", "Alice & Sam", "-z", tz)


def test_partner_add_normalises_and_records_consent(run: Cli) -> None:
    _couple(run)
    out = run.ok(
        "partner", "add", "Alice & Sam", "Alice", "--phone", "(415) 555-0123",
        "--email", "Alice@Example.org", "--quiet", "22:00-07:30",
        "--sms-consent", "signup form",
    ).output  # fmt: skip
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
            "ritual", "add", "1", "--kind", "date_night", "--title", "Date night",
            "--at", "19:30", "--every", "weekly:FR", "--duration", "2h",
            "--remind", "0,1h", "--channel", "email", "--json",
        ).output
    )  # fmt: skip
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
    assert [d["local"]["Alice"].split(" ", 2)[2] for d in data] == ["21:00 CET"] * 3 + [
        "21:00 CEST"
    ]
    assert [d["local"]["Sam"].split(" ", 2)[2] for d in data] == ["16:00 EDT"] * 3 + ["15:00 EDT"]
    table = run.ok("ritual", "preview", "--couple", "1", "--count", "2").output
    assert "Alice" in table and "Sam" in table and "couple" in table


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
