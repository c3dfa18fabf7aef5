"""The dispatcher against real peers: the twilio client over HTTP to the stand-in, SMTP to an
aiosmtpd sink, the console; on SQLite and PostgreSQL; time from the fake clock."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from service import couples, partners, planner
from service.app import Hearth
from service.channels import build
from service.channels.base import Transport
from service.channels.console import ConsoleTransport
from service.clock import FakeClock
from service.db import Database
from service.dispatcher import Dispatcher
from service.models import (
    Channel,
    ConsentRecord,
    ConsentState,
    Couple,
    Partner,
    Reminder,
    ReminderState,
)
from tests.conftest import make_settings
from tests.factories import add_ritual, couple_with_partners
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, TwilioStandIn

TONIGHT = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)  # 21:00 in Berlin


def _hearth(db: Database, clock: FakeClock, **sections: Any) -> Hearth:
    return Hearth(settings=make_settings(db, **sections), db=db, clock=clock)


def _peers(standin: TwilioStandIn, sink: SmtpSink) -> dict[str, Any]:
    return {
        "channels": {"sms": "twilio", "email": "smtp"},
        "twilio": {
            "account_sid": DEFAULT_ACCOUNT_SID,
            "auth_token": DEFAULT_AUTH_TOKEN,
            "from_number": "+15005550006",
            "api_base_url": standin.base_url,
            "sender_rate_per_second": 1000,
            "account_rate_per_second": 1000,
            "timeout_seconds": 5,
        },
        "smtp": {"host": sink.host, "port": sink.port, "security": "none"},
        "web": {"public_base_url": "https://hearth.example.org"},
    }


def _setup(db: Database, clock: FakeClock, **ritual: str) -> int:
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "five-minute-check-in", **ritual)
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)
    return cid


def _states_tonight(db: Database) -> set[str]:
    with db.session() as s:
        stmt = sa.select(Reminder.state).where(Reminder.occurrence_start == TONIGHT)
        return {state.value for state in s.scalars(stmt)}


def _sms_tonight(s: Session) -> Reminder:
    stmt = sa.select(Reminder).where(
        Reminder.channel == Channel.SMS, Reminder.occurrence_start == TONIGHT
    )
    return s.scalars(stmt).one()


def _dispatcher(hearth: Hearth, transports: dict[Channel, Transport] | None = None) -> Dispatcher:
    return Dispatcher(hearth, transports or build(hearth.settings), rng=random.Random(7))


def test_sends_each_due_reminder_once_through_real_peers(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _setup(db, clock)
    hearth = _hearth(db, clock, **_peers(twilio_standin, smtp_sink))
    d = _dispatcher(hearth)
    assert d.run_once().claimed == 0  # nothing due at noon
    clock.set(TONIGHT)
    with capture_logs() as logs:
        tally = d.run_once()
    assert (tally.claimed, tally.sent) == (3, 3)
    assert d.run_once().claimed == 0  # never twice
    [sms] = twilio_standin.sent
    assert sms.to == "+4915123456789" and sms.from_ == "+15005550006"
    assert sms.status_callback == "https://hearth.example.org/twilio/status"
    assert sms.body is not None
    assert "Five-minute check-in at 21:00" in sms.body and "STOP" in sms.body
    mails = smtp_sink.messages
    assert sorted(m.rcpt_tos[0] for m in mails) == ["alice@example.org", "sam@example.org"]
    mail = mails[0].message
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["List-Unsubscribe"].startswith("<https://hearth.example.org/unsubscribe/")
    assert mail.get_body(("html",)) is not None and mail.get_body(("plain",)) is not None
    with db.session() as s:
        rows = list(s.scalars(sa.select(Reminder).order_by(Reminder.id)))
    sent = [r for r in rows if r.state is ReminderState.SENT]
    assert len(sent) == 3
    assert {r.provider_message_id for r in sent if r.channel is Channel.SMS} == {sms.sid}
    assert {r.provider_message_id for r in sent if r.channel is Channel.EMAIL} == {
        m.message["Message-ID"] for m in mails
    }
    # Both partners get the same prompt for the same evening.
    assert len({r.prompt_id for r in sent}) == 1 and sent[0].prompt_id is not None
    # One log line per outcome, with ids and no contact details or text.
    outcomes = [e for e in logs if e["event"] == "reminder_sent"]
    assert len(outcomes) == 3 and all("couple_id" in e and "reminder_id" in e for e in outcomes)
    flat = repr(logs)
    for secret in ("+4915123456789", "alice@example.org", "sam@example.org", sms.body[:30]):
        assert secret not in flat


def test_the_console_channel_prints_each_message(db: Database, clock: FakeClock) -> None:
    _setup(db, clock)
    out = io.StringIO()
    d = _dispatcher(
        _hearth(db, clock),
        {ch: ConsoleTransport(ch, stream=out) for ch in Channel},
    )
    clock.set(TONIGHT)
    assert d.run_once().sent == 3
    text = out.getvalue()
    assert text.count("--- sms to +4915123456789") == 1
    assert text.count("--- email to") == 2
    assert "Five-minute check-in at 21:00" in text


@pytest.mark.parametrize(
    ("status", "code", "state", "last_error"),
    [
        (400, 21211, "failed", "twilio 21211"),
        (400, 21614, "failed", "twilio 21614"),
        (400, 21610, "skipped", "twilio 21610"),
    ],
)
def test_permanent_twilio_errors(
    db: Database,
    clock: FakeClock,
    twilio_standin: TwilioStandIn,
    smtp_sink: SmtpSink,
    status: int,
    code: int,
    state: str,
    last_error: str,
) -> None:
    _setup(db, clock)
    d = _dispatcher(_hearth(db, clock, **_peers(twilio_standin, smtp_sink)))
    twilio_standin.fail_to("+4915123456789", status=status, code=code)
    clock.set(TONIGHT)
    d.run_once()
    with db.session() as s:
        sms = _sms_tonight(s)
        assert sms.state.value == state and last_error in (sms.last_error or "")
        alice = s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one()
        if code == 21610:
            assert alice.sms_consent is ConsentState.OPTED_OUT
            rec = s.scalars(sa.select(ConsentRecord).order_by(ConsentRecord.id.desc())).first()
            assert rec is not None and rec.source == "carrier 21610"
        else:
            assert alice.sms_consent is ConsentState.CONSENTED
    assert d.run_once().claimed == 0  # no retry


def test_transient_errors_retry_with_backoff_and_retry_after(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _setup(db, clock)
    d = _dispatcher(_hearth(db, clock, **_peers(twilio_standin, smtp_sink)))
    twilio_standin.fail_next(1, status=429, retry_after=120)
    clock.set(TONIGHT)
    assert d.run_once().retried == 1
    with db.session() as s:
        sms = _sms_tonight(s)
        assert sms.state is ReminderState.SCHEDULED
        assert sms.next_attempt_at >= TONIGHT + timedelta(seconds=120)
    clock.advance(timedelta(seconds=60))
    assert d.run_once().claimed == 0  # Retry-After is honoured
    twilio_standin.fail_next(1, status=500)
    clock.advance(timedelta(seconds=61))
    assert d.run_once().retried == 1
    clock.advance(timedelta(minutes=2))
    assert d.run_once().sent == 1
    with db.session() as s:
        sms = _sms_tonight(s)
        assert (sms.state, sms.attempts) == (ReminderState.SENT, 3)


def test_retries_stop_at_expiry(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _setup(db, clock)
    d = _dispatcher(_hearth(db, clock, **_peers(twilio_standin, smtp_sink)))
    twilio_standin.fail_to("+4915123456789", status=503, code=20503)
    clock.set(TONIGHT)
    for _ in range(20):
        d.run_once()
        clock.advance(timedelta(minutes=3))
    with db.session() as s:
        sms = _sms_tonight(s)
        assert sms.state is ReminderState.EXPIRED and "503" in (sms.last_error or "")
        assert 2 <= sms.attempts <= 8
    # Every attempt stayed inside the fresh window (30 minutes after the due time).
    assert len(twilio_standin.requests) == sms.attempts


def test_smtp_rejections(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _setup(db, clock)
    d = _dispatcher(_hearth(db, clock, **_peers(twilio_standin, smtp_sink)))
    smtp_sink.reject_to("alice@example.org", code=550)
    smtp_sink.reject_to("sam@example.org", code=451)
    clock.set(TONIGHT)
    tally = d.run_once()
    assert (tally.sent, tally.failed, tally.retried) == (1, 1, 1)


def test_send_time_gates(db: Database, clock: FakeClock) -> None:
    cid = _setup(db, clock)
    out = io.StringIO()
    d = _dispatcher(_hearth(db, clock), {ch: ConsoleTransport(ch, out) for ch in Channel})
    with db.session() as s:
        alice = s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one()
        partners.set_consent(s, clock.now(), alice, ConsentState.OPTED_OUT, "STOP")
        sam = s.scalars(sa.select(Partner).where(Partner.name == "Sam")).one()
        sam.quiet_start, sam.quiet_end = (
            datetime(2000, 1, 1, 20, 30).time(),
            datetime(2000, 1, 1, 21, 10).time(),
        )
    clock.set(TONIGHT)
    tally = d.run_once()
    # Alice's SMS: opted out. Sam: in quiet hours until 21:10, still fresh -> deferred.
    assert (tally.skipped, tally.deferred, tally.sent) == (1, 1, 1)
    clock.set(TONIGHT + timedelta(minutes=10))
    assert d.run_once().sent == 1
    assert "--- email to sam@example.org" in out.getvalue()

    # Tomorrow: the couple is paused, so nothing goes out.
    with db.session() as s:
        c = s.get(Couple, cid)
        assert c is not None
        couples.pause(s, clock.now(), c, None)
    clock.set(TONIGHT + timedelta(days=1))
    tally = d.run_once()
    assert tally.sent == 0 and tally.skipped == 3


def test_stale_and_quiet_past_expiry_expire(db: Database, clock: FakeClock) -> None:
    _setup(db, clock)
    d = _dispatcher(_hearth(db, clock), {ch: ConsoleTransport(ch, io.StringIO()) for ch in Channel})
    with db.session() as s:
        sam = s.scalars(sa.select(Partner).where(Partner.name == "Sam")).one()
        sam.quiet_start = datetime(2000, 1, 1, 20, 0).time()
        sam.quiet_end = datetime(2000, 1, 1, 23, 0).time()
    clock.set(TONIGHT)
    assert d.run_once().expired == 1  # Sam's quiet hours end after the nudge goes stale
    clock.set(TONIGHT + timedelta(days=1, minutes=31))
    assert d.run_once().expired == 3  # the daemon was down: never send a stale nudge


def test_a_reclaimed_row_cannot_be_finished_twice(db: Database, clock: FakeClock) -> None:
    _setup(db, clock)
    hearth = _hearth(db, clock, daemon={"lease_seconds": 60})
    out = io.StringIO()
    transports: dict[Channel, Transport] = {ch: ConsoleTransport(ch, out) for ch in Channel}
    first, second = _dispatcher(hearth, transports), _dispatcher(hearth, transports)
    clock.set(TONIGHT)
    token, ids = first.claim(10)
    assert len(ids) == 3
    assert second.claim(10)[1] == []  # claimed rows are not handed out again
    jobs = first.prepare(token, ids)
    clock.advance(timedelta(seconds=61))  # the first worker stalls past its lease
    assert second.run_once().sent == 3
    for job in jobs:
        first.send(job)
    first.wait_idle()
    assert first.tally.lost_claims == 3 and first.tally.sent == 0
    assert out.getvalue().count("--- ") == 6  # at least once: the stalled sends went out too
    assert _states_tonight(db) == {"sent"}


def test_stop_hands_back_queued_rows(db: Database, clock: FakeClock) -> None:
    _setup(db, clock)
    hearth = _hearth(db, clock)
    d = _dispatcher(hearth, {ch: ConsoleTransport(ch, io.StringIO()) for ch in Channel})
    clock.set(TONIGHT)
    token, ids = d.claim(10)
    jobs = d.prepare(token, ids)
    d.stopping.set()
    d.submit(jobs)
    d.wait_idle()
    assert d.tally.released == 3
    assert _states_tonight(db) == {"scheduled"}
    with db.session() as s:
        assert {r.attempts for r in s.scalars(sa.select(Reminder))} == {0}
