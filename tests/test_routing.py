"""One nudge per partner per moment, counted where it lands: the Twilio stand-in (the real
``twilio`` client over HTTP) and the SMTP sink, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from service.channels import build
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Partner, Reminder
from service.domain import partners, routing
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from tests import peers
from tests.conftest import make_settings
from tests.factories import add_ritual, couple_with_partners
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn

ALICE_PHONE, ALICE, SAM = "+4915123456789", "alice@example.org", "sam@example.org"
EVENING = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)  # 21:00 in Berlin


def _setup(
    db: Database, clock: FakeClock, standin: TwilioStandIn, sink: SmtpSink
) -> tuple[Hearth, Dispatcher]:
    now = clock.now()
    cid = couple_with_partners(db, now, alice_both=False)  # Alice: sms, then email; Sam: email
    add_ritual(db, now, cid, "five-minute-check-in", remind="0,30")
    settings = make_settings(db, **peers.sections(standin, sink))
    hearth = Hearth(settings=settings, db=db, clock=clock)
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)
    return hearth, Dispatcher(hearth, build(settings), rng=random.Random(1))


def _drive(d: Dispatcher, clock: FakeClock, start: datetime, minutes: int) -> None:
    """Run the dispatcher once a minute over ``minutes`` (the injected clock)."""
    clock.set(start)
    for _ in range(minutes):
        d.run_once()
        clock.advance(timedelta(minutes=1))


def _received(standin: TwilioStandIn, sink: SmtpSink) -> Counter[str]:
    got: Counter[str] = Counter(m.to or "" for m in standin.sent)
    got.update(m.rcpt_tos[0] for m in sink.messages)
    return got


def test_a_dual_channel_partner_gets_one_nudge_per_moment(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _hearth, d = _setup(db, clock, twilio_standin, smtp_sink)
    # Two evenings, two moments each (30 min ahead and at the start).
    for day in (0, 1):
        _drive(d, clock, EVENING + timedelta(days=day, minutes=-31), 40)
    got = _received(twilio_standin, smtp_sink)
    assert got == {ALICE_PHONE: 4, SAM: 4}  # Alice's email never left: her SMS carried it
    assert ALICE not in got
    with db.session() as s:
        dropped = s.scalars(
            sa.select(Reminder.last_error).where(Reminder.channel == "email", Reminder.standby)
        ).all()
    assert dropped == ["covered by sms"] * 4


def test_a_permanently_refused_sms_falls_back_to_email(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _hearth, d = _setup(db, clock, twilio_standin, smtp_sink)
    twilio_standin.fail_to(ALICE_PHONE, 400, 21211)  # invalid 'To' number: permanent
    _drive(d, clock, EVENING - timedelta(minutes=31), 36)
    got = _received(twilio_standin, smtp_sink)
    assert got == {ALICE: 2, SAM: 2}  # both moments by email, once each
    # Two minutes behind the SMS's turn, the text still names the real time.
    assert {str(m.message["Subject"]) for m in smtp_sink.messages} == {
        "Five-minute check-in at 9:00 PM"
    }
    refused = [m for m in twilio_standin.requests if m.to == ALICE_PHONE]
    assert [m.error_code for m in refused] == [21211, 21211]  # each asked once, not retried


def test_an_sms_still_waiting_past_the_bound_gives_way_to_email(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """Undeliverable in time: the SMS is held back (here: its row deferred past the bound,
    as a deep backlog would); the email takes over and the SMS is stood down, never sent."""
    _hearth, d = _setup(db, clock, twilio_standin, smtp_sink)
    with db.session() as s:
        s.execute(
            sa.update(Reminder)
            .where(Reminder.channel == "sms", Reminder.due_at == EVENING)
            .values(next_attempt_at=EVENING + timedelta(minutes=10))
        )
    _drive(d, clock, EVENING, 12)
    got = _received(twilio_standin, smtp_sink)
    assert got == {ALICE: 1, SAM: 1}
    with db.session() as s:
        sms = s.scalars(
            sa.select(Reminder.last_error).where(
                Reminder.channel == "sms", Reminder.due_at == EVENING
            )
        ).one()
    assert sms == "fell back to email"


def test_both_channels_is_asked_for_explicitly(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _hearth, d = _setup(db, clock, twilio_standin, smtp_sink)
    with db.session() as s:
        alice = s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one()
        assert routing.describe(alice) == "sms, then email if sms cannot deliver"
        partners.edit(s, clock.now(), alice, both_channels=True)
        assert routing.describe(alice) == "sms and email (both asked for)"
        cid = alice.couple_id
    with db.write_engine.begin() as conn:
        planner.replan(conn, clock.now(), cid, timedelta(hours=48), 30)
    _drive(d, clock, EVENING - timedelta(minutes=31), 36)
    assert _received(twilio_standin, smtp_sink) == {ALICE_PHONE: 2, ALICE: 2, SAM: 2}


def test_rows_planned_before_the_migration_still_send_once(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """An existing couple's outbox as the old planner left it: Alice's email row due at the
    same instant as her SMS, no standby mark. The send-time route check still holds it back
    and drops it once the SMS went."""
    _hearth, d = _setup(db, clock, twilio_standin, smtp_sink)
    with db.session() as s:
        s.execute(sa.update(Reminder).values(standby=False, next_attempt_at=Reminder.due_at))
    _drive(d, clock, EVENING - timedelta(minutes=31), 36)
    assert _received(twilio_standin, smtp_sink) == {ALICE_PHONE: 2, SAM: 2}


def test_an_sms_in_flight_holds_the_email_until_its_lease_runs_out(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """A worker is sending the SMS (its lease runs): not unknown yet, the email waits. When
    the lease runs out the row is a live worker's to take again: it asks the provider first
    (nothing there), then the text goes, and the email is dropped. One nudge."""
    _hearth, d = _setup(db, clock, twilio_standin, smtp_sink)
    at = EVENING + timedelta(minutes=3)
    with db.session() as s:
        s.execute(
            sa.update(Reminder)
            .where(Reminder.channel == "sms", Reminder.due_at == EVENING)
            .values(
                state="sending",
                claim_token="gone",
                lease_until=at + timedelta(seconds=30),
                body="Hearth: Five-minute check-in now.",  # rendered: its send may have left
            )
        )
    clock.set(at)
    d.run_once()
    assert ALICE not in _received(twilio_standin, smtp_sink)
    for _ in range(4):
        clock.advance(timedelta(seconds=31))
        d.run_once()
    got = _received(twilio_standin, smtp_sink)
    assert got[ALICE_PHONE] == 1 and ALICE not in got
