"""Repair talks and the night (issue 14, items 3 and 4): a talk is never placed so that a
partner's invitation or reminder has no calm moment before it, and repair texts to partners
without quiet hours of their own keep the default night (22:00-08:00 in their zone) at send
time too. Through the Twilio stand-in, on both databases."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from service.channels import build
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Partner, Reminder, ReminderState, RepairRequest
from service.domain import couples, partners
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from service.replies import repair
from tests import peers
from tests.conftest import make_settings
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn


def _couple(db: Database, now: datetime, tz: str, noah_quiet: tuple[time, time] | None) -> int:
    with db.session() as s:
        c = couples.add(s, now, name="Mia & Noah", timezone=tz)
        for name, phone in (("Mia", "+14155550101"), ("Noah", "+14155550102")):
            partners.add(
                s,
                now,
                c,
                name=name,
                phone=phone,
                email=None,
                timezone=None,
                channels="sms",
                quiet_hours=None,
                sms_consent="test",
            )
        if noah_quiet is not None:
            noah = s.scalars(sa.select(Partner).where(Partner.name == "Noah")).one()
            noah.timezone = "America/New_York"
            noah.quiet_start, noah.quiet_end = noah_quiet
        return c.id


def _run_through(hearth: Hearth, clock: FakeClock, until: datetime) -> Dispatcher:
    d = Dispatcher(hearth, build(hearth.settings), rng=random.Random(8))
    while clock.now() < until:
        d.run_once()
        clock.advance(timedelta(minutes=5))
    return d


def _request(hearth: Hearth, cid: int, now: datetime) -> RepairRequest:
    with hearth.db.session(immediate=True) as s:
        c = couples.resolve(s, cid)
        mia = next(p for p in c.partners if p.name == "Mia")
        rid = repair.request(s, now, c, mia, "sms").id
    repair.schedule_pending(hearth)
    planner.plan(hearth.db.write_engine, now, timedelta(hours=48), 30)  # the talk's reminder
    with hearth.db.session() as s:
        req = s.get(RepairRequest, rid)
        assert req is not None and req.slot_start is not None
        s.expunge(req)
        return req


def _sections(standin: TwilioStandIn, sink: SmtpSink) -> dict[str, Any]:
    return peers.sections(standin, sink)


def test_a_talk_is_not_placed_at_the_end_of_a_partners_night(
    db: Database, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    # Noah in New York, quiet 23:00-07:30; a request at 07:45 UTC used to pick 12:30 UTC,
    # 07:30 for him: his invitation and 30-minute reminder expired at once.
    now = datetime(2026, 1, 5, 7, 45, tzinfo=UTC)
    clock = FakeClock(now)
    hearth = Hearth(
        settings=make_settings(db, **_sections(twilio_standin, smtp_sink)), db=db, clock=clock
    )
    cid = _couple(db, now, "UTC", (time(23, 0), time(7, 30)))
    req = _request(hearth, cid, now)
    assert req.slot_start is not None and req.slot_start != datetime(2026, 1, 5, 12, 30, tzinfo=UTC)
    _run_through(hearth, clock, req.slot_start + timedelta(minutes=5))
    to = [r.to for r in twilio_standin.sent]
    # Each partner: the invitation and the reminder before the talk.
    assert to.count("+14155550101") >= 2 and to.count("+14155550102") >= 2
    with db.session() as s:
        expired = s.scalar(
            sa.select(sa.func.count()).where(Reminder.state == ReminderState.EXPIRED)
        )
    assert expired == 0


def test_repair_texts_keep_the_default_night_for_partners_without_quiet_hours(
    db: Database, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    # Los Angeles, no quiet hours of their own; REPAIR at 00:15 local (08:15 UTC).
    now = datetime(2026, 1, 5, 8, 15, tzinfo=UTC)
    clock = FakeClock(now)
    hearth = Hearth(
        settings=make_settings(db, **_sections(twilio_standin, smtp_sink)), db=db, clock=clock
    )
    cid = _couple(db, now, "America/Los_Angeles", None)
    req = _request(hearth, cid, now)
    assert req.slot_start is not None
    _run_through(hearth, clock, req.slot_start + timedelta(minutes=5))
    night_end = datetime(2026, 1, 5, 16, 0, tzinfo=UTC)  # 08:00 in Los Angeles
    sent = twilio_standin.sent
    assert len(sent) >= 4  # two invitations, two reminders
    first = min(r.received_at for r in sent)
    assert all(r.received_at >= first for r in sent)
    with db.session() as s:
        rows = s.scalars(sa.select(Reminder).where(Reminder.state == ReminderState.SENT))
        assert all(r.sent_at is not None and r.sent_at >= night_end for r in rows)
