"""The delivery rules of issue 14: late-planned reminders, quiet hours (told and handled),
through the planner and the dispatcher against the Twilio stand-in and the SMTP sink, on
SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from service.channels import build
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, Couple, Partner, Prompt, Reminder, ReminderState, RitualKind
from service.domain import rituals
from service.domain import unsubscribe as links
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from tests import peers
from tests.conftest import make_settings
from tests.factories import add_ritual, couple_with_partners
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn

H48 = timedelta(hours=48)


def _hearth(db: Database, clock: FakeClock, **sections: Any) -> Hearth:
    return Hearth(settings=make_settings(db, **sections), db=db, clock=clock)


def _dispatcher(hearth: Hearth) -> Dispatcher:
    return Dispatcher(hearth, build(hearth.settings), rng=random.Random(3))


def _sms_rows(db: Database) -> list[Reminder]:
    with db.session() as s:
        stmt = sa.select(Reminder).where(Reminder.channel == Channel.SMS).order_by(Reminder.due_at)
        return list(s.scalars(stmt))


def test_a_late_ritual_with_a_long_offset_is_reminded_at_once(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    now = clock.now()  # Mon 12:00 UTC, 13:00 in Berlin
    cid = couple_with_partners(db, now)
    add_ritual(
        db,
        now,
        cid,
        kind="date_night",
        title="Lunch walk",
        at="13:02",
        every="weekly:MO",
        remind="2h,90m",
        duration="30m",
    )
    planner.plan(db.write_engine, now, H48, 30)
    today = [r for r in _sms_rows(db) if r.occurrence_start.date() == now.date()]
    # One nudge, the shorter offset, due now; fresh until the walk starts.
    assert [(r.offset_minutes, r.expires_at) for r in today] == [
        (90, datetime(2026, 1, 5, 12, 2, tzinfo=UTC))
    ]
    d = _dispatcher(_hearth(db, clock, **peers.sections(twilio_standin, smtp_sink)))
    assert d.run_once().sent == 3  # Alice's SMS and email, Sam's email
    [sms] = twilio_standin.sent
    # Sent 2 min past its due time, it tells the time from now; discreet, it names nothing.
    assert sms.body is not None and sms.body.startswith("Hearth: a moment for you two in 2 min.")
    # Once the walk has started, a ritual made then gets no nudge for it.
    later = planner.plan(db.write_engine, now + timedelta(minutes=3), H48, 30, count=True)
    assert later.created == 0


def test_the_same_late_rule_for_a_short_offset(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(
        db,
        now,
        cid,
        kind="date_night",
        title="Lunch walk",
        at="13:02",
        every="weekly:MO",
        remind="30m",
        duration="30m",
    )
    planner.plan(db.write_engine, now, H48, 30)
    today = [r for r in _sms_rows(db) if r.occurrence_start.date() == now.date()]
    assert [(r.offset_minutes, r.due_at <= now) for r in today] == [(30, True)]


def _quiet_partner(db: Database, now: datetime, quiet: tuple[time, time]) -> int:
    cid = couple_with_partners(db, now)
    with db.session() as s:
        stmt = sa.select(Partner).where(Partner.couple_id == cid, Partner.name == "Alice")
        alice = s.scalars(stmt).one()
        alice.timezone = "America/Los_Angeles"
        alice.quiet_start, alice.quiet_end = quiet
    return cid


def test_a_reminder_in_quiet_hours_goes_out_just_before_they_begin(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    # 08:40 in Berlin is 23:40 for Alice in Los Angeles, quiet 22:00-07:00: the 30-minute
    # nudge (23:10) goes out at 21:59 her time, 71 minutes early, and says "at 23:40".
    now = clock.now()
    cid = _quiet_partner(db, now, (time(22, 0), time(7, 0)))
    add_ritual(
        db,
        now,
        cid,
        kind="check_in",
        title="Morning hello",
        at="08:40",
        every="daily",
        remind="30m",
        duration="10m",
    )
    planner.plan(db.write_engine, now, H48, 30)
    first = _sms_rows(db)[0]
    assert first.occurrence_start == datetime(2026, 1, 6, 7, 40, tzinfo=UTC)
    assert first.due_at == datetime(2026, 1, 6, 5, 59, tzinfo=UTC)  # 21:59 in Los Angeles
    d = _dispatcher(_hearth(db, clock, **peers.sections(twilio_standin, smtp_sink)))
    clock.set(first.due_at)
    d.run_once()
    [sms] = twilio_standin.sent
    assert sms.body is not None and "at 11:40 PM" in sms.body


def test_too_early_for_quiet_hours_waits_for_their_end_and_says_the_right_time(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    # Quiet 22:00-07:00 for Alice (LA); a one-hour ritual at 16:00 Berlin = 07:00 LA... at
    # 07:10 LA with a 30 minute nudge at 06:40: nine hours into the night, so not early; it
    # waits for 07:00 and then says the talk starts in 10 minutes, not "at 07:10".
    now = clock.now()
    cid = _quiet_partner(db, now, (time(22, 0), time(7, 0)))
    add_ritual(
        db,
        now,
        cid,
        kind="check_in",
        title="Tea",
        at="16:10",
        every="daily",
        remind="30m",
        duration="60m",
    )
    planner.plan(db.write_engine, now, H48, 30)
    first = _sms_rows(db)[0]
    assert first.due_at == datetime(2026, 1, 5, 14, 40, tzinfo=UTC)  # 06:40 LA, unchanged
    d = _dispatcher(_hearth(db, clock, **peers.sections(twilio_standin, smtp_sink)))
    clock.set(first.due_at)
    d.run_once()
    assert twilio_standin.sent == []
    clock.set(datetime(2026, 1, 5, 15, 0, tzinfo=UTC))  # 07:00 LA: quiet hours over
    d.run_once()
    [sms] = twilio_standin.sent
    assert sms.body is not None and "in 10 min" in sms.body and "at 7:10 AM" not in sms.body


def test_list_unsubscribe_is_a_plain_url_in_the_raw_message(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "five-minute-check-in")
    planner.plan(db.write_engine, now, H48, 30)
    sections = peers.sections(twilio_standin, smtp_sink)
    base = "https://reminders.a-rather-long-host-name-for-hearth.example.org/couples-admin"
    sections["web"] = {"public_base_url": base}
    d = _dispatcher(_hearth(db, clock, **sections))
    clock.set(datetime(2026, 1, 5, 20, 0, tzinfo=UTC))
    d.run_once()
    with db.session() as s:
        tokens = {p.email: links.token(s, p) for p in s.scalars(sa.select(Partner))}
    assert len(smtp_sink.messages) == 2
    for mail in smtp_sink.messages:
        url = f"{base}/unsubscribe/{tokens[mail.rcpt_tos[0]]}"
        assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in mail.raw
        assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in mail.raw
        assert b"List-Unsubscribe: =?" not in mail.raw  # never RFC 2047-encoded


@pytest.mark.parametrize("kind", ["check_in", "gratitude", "repair", "date_night", "custom"])
def test_a_discreet_text_names_no_ritual_prompt_or_feeling(
    db: Database,
    clock: FakeClock,
    twilio_standin: TwilioStandIn,
    smtp_sink: SmtpSink,
    kind: str,
) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    tonight = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)
    with db.session() as s:  # one-off, as a repair talk is; tonight and tomorrow
        couple = s.get(Couple, cid)
        assert couple is not None
        for start in (tonight, tonight + timedelta(days=1)):
            rituals.add_one_off(
                s,
                now,
                couple,
                kind=RitualKind(kind),
                title="Our feelings talk",
                description="",
                start=start,
                duration_minutes=30,
                offsets=[0],
            )
    planner.plan(db.write_engine, now, H48, 30)
    d = _dispatcher(_hearth(db, clock, **peers.sections(twilio_standin, smtp_sink)))
    clock.set(tonight)
    d.run_once()
    [sms] = twilio_standin.sent
    assert sms.body is not None
    with db.session() as s:
        sent = s.scalars(sa.select(Reminder).where(Reminder.state == ReminderState.SENT))
        [prompt] = {r.prompt_id for r in sent}
        found = s.get(Prompt, prompt) if prompt else None
        text = found.text if found else ""
    assert sms.body.startswith("Hearth: a moment for you two at 9:00 PM.")
    assert "feeling" not in sms.body.lower() and (not text or text not in sms.body)
    # Who chose full text reads the title (and the prompt, when it fits).
    with db.session() as s:
        s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one().full_text = True
    clock.set(tonight + timedelta(days=1))
    d.run_once()
    assert (twilio_standin.sent[-1].body or "").startswith("Hearth: Our feelings talk at 9:00 PM.")
