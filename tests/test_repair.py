"""The repair-conversation flow end to end: request, slot, invitations, reminder, feed event,
follow-up, calling it off; through the service, the CLI and the dispatcher's console."""

from __future__ import annotations

import io
import json
import threading
from datetime import UTC, datetime, time, timedelta

import sqlalchemy as sa
from icalendar import Calendar

from service.calendar import feeds
from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import (
    Channel,
    OccurrenceException,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
    RepairRequest,
    RepairState,
    Reply,
    Ritual,
)
from service.domain import couples
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from service.replies import inbound, repair
from tests.conftest import Cli, snapshot
from tests.factories import add_ritual, couple_with_partners


def _request(db: Database, now: datetime, cid: int, at: datetime | None = None) -> int:
    with db.session(immediate=True) as s:
        c = couples.resolve(s, cid)
        alice = next(p for p in c.partners if p.name == "Alice")
        return repair.request(s, now, c, alice, "sms", at=at).id


def _messages(db: Database, purpose: ReminderPurpose) -> list[tuple[str, str, datetime]]:
    """(partner, channel, due) of the queued messages of ``purpose``, by due time."""
    with db.session() as s:
        rows = s.execute(
            sa.select(Partner.name, Reminder.channel, Reminder.due_at)
            .join(Partner, Partner.id == Reminder.partner_id)
            .where(Reminder.purpose == purpose, Reminder.state == ReminderState.SCHEDULED)
            .order_by(Reminder.due_at, Partner.name, Reminder.channel)
        ).all()
    return [(name, ch.value, due) for name, ch, due in rows]


def _console(hearth: Hearth) -> tuple[Dispatcher, io.StringIO]:
    out = io.StringIO()
    return Dispatcher(hearth, {ch: ConsoleTransport(ch, out) for ch in Channel}), out


def test_a_request_made_while_no_daemon_ran_is_planned_by_the_sweep(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    """The reaction never ran (the daemon was down); hours later the sweep plans it in the
    future, leaving time for the invitation to arrive before the talk."""
    now = clock.now()
    cid = couple_with_partners(db, now)
    rid = _request(db, now, cid)
    clock.advance(timedelta(hours=30))
    assert repair.schedule_pending(hearth) == 1
    assert repair.schedule_pending(hearth) == 0  # once
    with db.session() as s:
        req = s.get(RepairRequest, rid)
        assert req is not None and req.state is RepairState.SCHEDULED
        assert req.slot_start is not None
        notice = timedelta(minutes=hearth.settings.repair.remind_minutes_before)
        assert req.slot_start >= clock.now() + notice


def test_two_workers_plan_one_request_once(hearth: Hearth, db: Database, clock: FakeClock) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    _request(db, now, cid)
    start = threading.Barrier(2)
    counts: list[int] = []

    def worker() -> None:
        start.wait()
        counts.append(repair.schedule_pending(hearth))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(counts) == [0, 1]
    with db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Ritual)) == 1
    assert len(_messages(db, ReminderPurpose.INVITE)) == 3  # Alice: SMS + email; Sam: email


def test_a_night_request_invites_each_partner_after_their_night(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    """REPAIR at 23:30 in Berlin: nobody's phone lights up about it before their morning."""
    clock.set(datetime(2026, 1, 5, 22, 30, tzinfo=UTC))  # 23:30 Berlin, 17:30 New York
    now = clock.now()
    cid = couple_with_partners(db, now, sam_tz="America/New_York")
    at = datetime(2026, 1, 6, 17, 0, tzinfo=UTC)  # 18:00 Berlin, 12:00 New York
    _request(db, now, cid, at=at)
    repair.schedule_pending(hearth)
    invites = _messages(db, ReminderPurpose.INVITE)
    # No quiet hours of their own: the default night (22:00-08:00) in each one's zone.
    assert invites == [
        ("Sam", "email", now),  # 17:30 in New York: at once
        ("Alice", "email", datetime(2026, 1, 6, 7, 0, tzinfo=UTC)),  # 08:00 Berlin
        ("Alice", "sms", datetime(2026, 1, 6, 7, 0, tzinfo=UTC)),
    ]


def test_the_follow_up_keeps_the_wall_clock_across_a_dst_change(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    """A talk on Saturday 28 March 18:00 Berlin ends 18:45; Europe springs forward that
    night, so the next day's 18:45 is 23 hours later, not 24."""
    clock.set(datetime(2026, 3, 27, 12, 0, tzinfo=UTC))
    now = clock.now()
    cid = couple_with_partners(db, now, sam_tz="America/New_York")
    _request(db, now, cid, at=datetime(2026, 3, 28, 17, 0, tzinfo=UTC))
    repair.schedule_pending(hearth)
    follow = {(name, ch): due for name, ch, due in _messages(db, ReminderPurpose.FOLLOWUP)}
    assert follow[("Alice", "sms")] == datetime(2026, 3, 29, 16, 45, tzinfo=UTC)  # 18:45 CEST
    assert follow[("Sam", "email")] == datetime(2026, 3, 29, 17, 45, tzinfo=UTC)  # 13:45 EDT


def test_the_slot_finder_reads_quiet_hours_in_each_zone_on_a_dst_day(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    """Request Saturday 28 March 20:00 Berlin; the cooling-off ends 22:00. Alice is quiet
    22:00-07:00 Berlin, Sam 22:00-08:00 New York. Europe springs forward that night (New York
    did on 8 March): Sam is awake from 08:00 New York = 14:00 CEST = 12:00 UTC, and the talk
    leaves him an hour before it for the invitation and the reminder: 13:00 UTC."""
    clock.set(datetime(2026, 3, 28, 19, 0, tzinfo=UTC))
    now = clock.now()
    cid = couple_with_partners(db, now, sam_tz="America/New_York")
    with db.session() as s:
        for p in s.scalars(sa.select(Partner)):
            p.quiet_start, p.quiet_end = time(22), time(7 if p.name == "Alice" else 8)
    rid = _request(db, now, cid)
    repair.schedule_pending(hearth)
    with db.session() as s:
        req = s.get(RepairRequest, rid)
        assert req is not None
        assert req.slot_start == datetime(2026, 3, 29, 13, 0, tzinfo=UTC)


def test_a_scheduled_talk_is_in_the_feed_with_a_reminder_before_it(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "five-minute-check-in")
    slot = datetime(2026, 1, 6, 17, 0, tzinfo=UTC)
    _request(db, now, cid, at=slot)
    repair.schedule_pending(hearth)
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)
    nudges = {
        (name, ch, due)
        for name, ch, due in _messages(db, ReminderPurpose.NUDGE)
        if due.date() == slot.date() and due < slot
    }
    before = slot - timedelta(minutes=hearth.settings.repair.remind_minutes_before)
    assert nudges == {
        ("Alice", "sms", before),
        ("Alice", "email", before),
        ("Sam", "email", before),
    }
    with db.session() as s:
        c = couples.resolve(s, cid)
        cal = Calendar.from_ical(feeds.build_calendar(c, list(c.rituals), now=now))
    [talk] = [e for e in cal.walk("VEVENT") if e["SUMMARY"] == "Repair conversation"]
    assert talk.decoded("DTSTART") == slot
    assert "I feel" in str(talk["DESCRIPTION"]) and "RRULE" not in talk


def test_skip_after_the_invitation_calls_the_talk_off_and_tells_the_other(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "five-minute-check-in")
    rid = _request(db, now, cid, at=datetime(2026, 1, 6, 17, 0, tzinfo=UTC))
    repair.schedule_pending(hearth)
    d, out = _console(hearth)
    assert d.run_once().sent == 3
    assert "Reply SKIP to call it off" in out.getvalue()
    with db.session(immediate=True) as s:
        alice = s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one()
        answer = inbound.handle(hearth, s, clock.now(), alice, "skip", "SM1")
    assert answer == inbound.CALLED_OFF_TEXT
    with db.session() as s:
        req = s.get(RepairRequest, rid)
        assert req is not None and req.state is RepairState.CANCELLED
        talk = s.get(Ritual, req.ritual_id)
        assert talk is not None and talk.ended_at == clock.now()
        assert (
            s.scalar(
                sa.select(sa.func.count())
                .select_from(Reminder)
                .where(
                    Reminder.purpose == ReminderPurpose.FOLLOWUP,
                    Reminder.state == ReminderState.SCHEDULED,
                )
            )
            == 0
        )
    assert [(n, ch) for n, ch, _ in _messages(db, ReminderPurpose.NOTICE)] == [("Sam", "email")]
    with db.session() as s:  # the nightly check-in is not touched
        assert s.scalar(sa.select(sa.func.count()).select_from(OccurrenceException)) == 0


def test_follow_up_answers_are_stored(hearth: Hearth, db: Database, clock: FakeClock) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    _request(db, now, cid, at=datetime(2026, 1, 6, 17, 0, tzinfo=UTC))
    repair.schedule_pending(hearth)
    d, out = _console(hearth)
    d.run_once()
    clock.set(datetime(2026, 1, 7, 17, 45, tzinfo=UTC))  # the next day, at the talk's end
    assert d.run_once().sent == 3
    assert "a quick question about Tuesday" in out.getvalue()  # discreet: no "talk"
    with db.session(immediate=True) as s:
        alice = s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one()
        answers = [
            inbound.handle(hearth, s, clock.now(), alice, body, f"SM{i}")
            for i, body in enumerate(["Yes", "NO", "we went for a walk and talked it over"])
        ]
    assert answers == ["Hearth: thank you, noted."] * 3
    with db.session() as s:
        stored = s.execute(sa.select(Reply.body, Reply.action).order_by(Reply.id)).all()
    assert [hearth.keys.open(b) for b, _ in stored] == [
        "Yes",
        "NO",
        "we went for a walk and talked it over",
    ]
    assert {a for _, a in stored} == {"follow-up answer"}


def test_repair_cli_request_list_cancel(
    hearth: Hearth, db: Database, clock: FakeClock, run: Cli
) -> None:
    couple_with_partners(db, clock.now())
    before = snapshot(db)
    for bad in (["--by", "Nobody"], ["--at", "2026-01-04 18:00"], ["--at", "tomorrow-ish"]):
        result = run("repair", "request", "Alice & Sam", *bad)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, bad
    assert snapshot(db) == before

    out = run.ok("repair", "request", "Alice & Sam", "--by", "Sam", "--at", "2026-01-06 18:00")
    assert "at Tue 2026-01-06 18:00 CET" in out.output
    again = run("repair", "request", "Alice & Sam")
    assert again.exit_code == 2 and "already has a repair conversation" in again.output
    repair.schedule_pending(hearth)
    [row] = json.loads(run.ok("repair", "list", "--json").output)
    assert (row["state"], row["slot_start"], row["source"]) == (
        "scheduled",
        "2026-01-06T17:00:00+00:00",
        "admin",
    )
    assert "scheduled" in run.ok("repair", "list", "--couple", "Alice & Sam").output

    assert (
        run.ok("repair", "cancel", str(row["id"])).output.strip() == f"cancelled repair {row['id']}"
    )
    notices = _messages(db, ReminderPurpose.NOTICE)
    assert [(n, ch) for n, ch, _ in notices] == [
        ("Alice", "email"),
        ("Alice", "sms"),
        ("Sam", "email"),
    ]
    assert _messages(db, ReminderPurpose.INVITE) == []  # the unsent invitations are cancelled
    twice = run("repair", "cancel", str(row["id"]))
    assert twice.exit_code == 2 and "cancelled" in twice.output
    assert run("repair", "cancel", "999").exit_code == 2
