"""Item 1 of issue 14 from the admin's side: the commands that put a partner's reminders in
their quiet hours say so (text and JSON), `ritual preview` marks them, `hearth doctor` lists
who will not be nudged, `deliveries list` gives the reason in words; /metrics counts
undeliverable reminders by reason and cancelled ones."""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.core.metrics import REGISTRY
from service.core.timeutil import zone
from service.db.context import Hearth
from service.db.models import Channel, Reminder, Ritual
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from tests.conftest import Cli


def _couple_with_noah(run: Cli) -> None:
    """Mia in Berlin; Noah in Los Angeles, quiet 22:00-07:00, on SMS."""
    run.ok("couple", "add", "Mia & Noah", "-z", "Europe/Berlin")
    run.ok("partner", "add", "1", "Mia", "--email", "mia@example.org")
    run.ok(
        "partner",
        "add",
        "1",
        "Noah",
        "--phone",
        "+14155550123",
        "-z",
        "America/Los_Angeles",
        "--quiet",
        "22:00-07:00",
        "--sms-consent",
        "signup form",
    )


def test_ritual_add_warns_of_quiet_hours_once_per_partner(run: Cli) -> None:
    _couple_with_noah(run)
    # 08:40 Berlin = 23:40 for Noah: the 30-minute nudge (23:10) goes out at 21:59 his time.
    out = run.ok(
        "ritual",
        "add",
        "1",
        "--kind",
        "check_in",
        "--title",
        "Morning hello",
        "--at",
        "08:40",
        "--every",
        "daily",
        "--remind",
        "30m",
        "--duration",
        "10m",
    ).output
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: Noah's reminder for 'Morning hello' falls at Mon 23:10 their time, in their "
        "quiet hours (22:00-07:00): it goes out at 21:59, 1 h 11 min early"
    ]
    # 16:10 Berlin = 07:10 for Noah: the 30-minute nudge (06:40) is 8 h 40 into his night,
    # too early to move; it is still fresh when the night ends at 07:00.
    data = json.loads(
        run.ok(
            "ritual",
            "add",
            "1",
            "--kind",
            "check_in",
            "--title",
            "Tea",
            "--at",
            "16:10",
            "--every",
            "daily",
            "--remind",
            "30m",
            "--duration",
            "60m",
            "--json",
        ).output
    )
    [w] = data["warnings"]
    assert (w["partner"], w["delivered"], w["local_time"]) == ("Noah", True, "Mon 06:40")
    assert "it goes out at 07:00, when the quiet hours end (20 min late)" in w["warning"]


def test_a_reminder_that_cannot_be_delivered_is_told_everywhere(
    run: Cli, hearth: Hearth, clock: FakeClock
) -> None:
    _couple_with_noah(run)
    # 16:30 Berlin = 07:30 for Noah, reminded 5 h before: 02:30, 4 h 30 into his night;
    # fresh until 03:00, the night ends at 07:00: it cannot be delivered.
    out = run.ok(
        "ritual",
        "add",
        "1",
        "--kind",
        "date_night",
        "--title",
        "Brunch",
        "--at",
        "16:30",
        "--every",
        "weekly:SA",
        "--remind",
        "5h",
        "--duration",
        "30m",
    ).output
    assert (
        "warning: Noah's reminder for 'Brunch' falls at Sat 02:30 their time, in their quiet "
        "hours (22:00-07:00): it will not be delivered" in out
    )
    preview = run.ok("ritual", "preview", "1", "--count", "1").output
    assert "(no nudge: quiet hours)" in preview
    marks = json.loads(run.ok("ritual", "preview", "1", "--count", "1", "--json").output)
    noah = next(z for z in marks[0]["local"] if z["name"] == "Noah")
    assert noah["quiet_hours"][0]["delivered"] is False
    doc = run("doctor")
    assert doc.exit_code == 1
    assert "Brunch" in doc.output and "Noah" in doc.output and "not be delivered" in doc.output
    [finding] = json.loads(run("doctor", "--json").output)
    assert (finding["partner"], finding["ritual"]) == ("Noah", "Brunch")

    # The daemon's side: the reminder expires, counted by reason, listed in words.
    before = _sample("hearth_reminders_undeliverable_total", channel="sms", reason="quiet_hours")
    now = clock.now()
    planner.plan(hearth.db.write_engine, now, timedelta(days=7), 30)
    d = Dispatcher(
        hearth, {ch: ConsoleTransport(ch, io.StringIO()) for ch in Channel}, rng=random.Random(2)
    )
    clock.set(datetime(2026, 1, 10, 10, 30, tzinfo=UTC))  # Sat 02:30 in Los Angeles
    d.run_once()
    clock.set(datetime(2026, 1, 10, 12, 0, tzinfo=UTC))
    d.run_once()
    after = _sample("hearth_reminders_undeliverable_total", channel="sms", reason="quiet_hours")
    assert after - before == 1
    listed = run.ok("deliveries", "list", "--state", "expired").output
    assert "in the partner's quiet hours until it went stale" in listed
    rows = json.loads(run.ok("deliveries", "list", "--state", "expired", "--json").output)
    assert rows[0]["reason"] == "in the partner's quiet hours until it went stale"


def test_partner_and_couple_edits_warn_too(run: Cli) -> None:
    run.ok("couple", "add", "Mia & Noah", "-z", "Europe/Berlin")
    run.ok("partner", "add", "1", "Noah", "--email", "noah@example.org", "-z", "Europe/Berlin")
    run.ok(
        "ritual",
        "add",
        "1",
        "--kind",
        "check_in",
        "--title",
        "Late call",
        "--at",
        "22:30",
        "--every",
        "daily",
        "--remind",
        "0",
        "--duration",
        "20m",
    )
    out = run.ok("partner", "edit", "Noah", "--quiet", "22:00-07:00").output
    assert "warning: Noah's reminder for 'Late call' falls at Mon 22:30" in out
    assert "goes out at 21:59, 31 min early" in out
    out = run.ok("couple", "edit", "1", "--timezone", "Europe/London").output
    assert out.count("warning: Noah's") == 1


def test_cancelled_reminders_are_counted(run: Cli, hearth: Hearth, clock: FakeClock) -> None:
    run.ok("couple", "add", "Mia & Noah", "-z", "Europe/Berlin")
    run.ok("partner", "add", "1", "Noah", "--email", "noah@example.org")
    run.ok("ritual", "add", "1", "--template", "five-minute-check-in")
    planner.plan(hearth.db.write_engine, clock.now(), timedelta(hours=48), 30)
    before = _sample("hearth_reminders_total", channel="email", state="cancelled")
    run.ok("ritual", "edit", "1", "--at", "21:30")
    with hearth.db.write_engine.begin() as conn:
        planner.replan(conn, clock.now(), 1, timedelta(hours=48), 30)
    assert _sample("hearth_reminders_total", channel="email", state="cancelled") - before == 2


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_early_means_at_most_quiet_early_hours_in_preview_and_outbox(
    run_sqlite: Cli, sqlite_hearth: Hearth, clock: FakeClock
) -> None:
    """Issue 25, item 11: with quiet hours 22:30-07:00 and the default 3 h, a nudge at 01:29
    goes out at 22:29 (3 h early); one at 01:30 would be 3 h 01 min early, so it is not
    moved (and, stale before 07:00, not sent). ``ritual preview`` and the planned outbox
    rows say the same."""
    run = run_sqlite
    run.ok("couple", "add", "Mia & Noah", "-z", "Europe/Berlin")
    run.ok(
        "partner",
        "add",
        "1",
        "Noah",
        "--email",
        "noah@example.org",
        "--quiet",
        "22:30-07:00",
    )
    for title, at in (("Within", "01:59"), ("Beyond", "02:00")):
        spec = ["--kind", "check_in", "--title", title, "--at", at, "--every", "daily"]
        run.ok("ritual", "add", "1", *spec, "--remind", "30m", "--duration", "8h")
    within = run.ok("ritual", "preview", "1", "--count", "1").output
    beyond = run.ok("ritual", "preview", "2", "--count", "1").output
    assert "(nudge 22:29, early: quiet hours)" in within
    assert "(no nudge: quiet hours)" in beyond and "22:29" not in beyond
    planner.plan(sqlite_hearth.db.write_engine, clock.now(), timedelta(hours=48), 30)
    with sqlite_hearth.db.session() as s:
        rows = s.execute(
            sa.select(Ritual.title, Reminder.due_at).join(Ritual, Ritual.id == Reminder.ritual_id)
        ).all()
    berlin = zone("Europe/Berlin")
    local = {(title, f"{due.astimezone(berlin):%H:%M}") for title, due in rows}
    assert ("Within", "22:29") in local
    assert [at for title, at in local if title == "Beyond"] == ["01:30"]  # the gate expires it
