"""The dispatcher against real peers: the twilio client over HTTP to the stand-in, SMTP to an
aiosmtpd sink, the console; on SQLite and PostgreSQL; time from the fake clock."""

from __future__ import annotations

import io
import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from service.channels import build
from service.channels.base import Message, Receipt, Transport, TransportError
from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import (
    Channel,
    ConsentRecord,
    ConsentState,
    Couple,
    Partner,
    Prompt,
    PromptRotation,
    Reminder,
    ReminderState,
    Ritual,
)
from service.domain import couples, notices, partners, prompts, rituals, skips
from service.outbox import claims, planner
from service.outbox.backoff import jittered
from service.outbox.dispatcher import Dispatcher
from service.outbox.finisher import Finisher
from service.outbox.texts import SMS_HINTS
from tests import peers
from tests.conftest import _database, make_settings
from tests.factories import add_ritual, couple_with_partners
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import (
    TwilioStandIn,
    num_segments,
)
from tests.processes import free_port, wait_for
from tests.test_messages import LONG_TITLE

TONIGHT = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)  # 21:00 in Berlin
ALICE = "+4915123456789"  # the factory couple's partner on SMS


def _hearth(db: Database, clock: FakeClock, **sections: Any) -> Hearth:
    return Hearth(settings=make_settings(db, **sections), db=db, clock=clock)


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
    return Dispatcher(
        hearth, transports or build(hearth.settings, hearth.clock), rng=random.Random(7)
    )


def test_sends_each_due_reminder_once_through_real_peers(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _setup(db, clock)
    hearth = _hearth(db, clock, **peers.sections(twilio_standin, smtp_sink))
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
    # Alice has not chosen full text: her lock screen names no ritual and no prompt.
    assert "a moment for you two at 9:00 PM" in sms.body and "STOP" in sms.body
    assert "check-in" not in sms.body.lower()
    mails = smtp_sink.messages
    assert sorted(m.rcpt_tos[0] for m in mails) == ["alice@example.org", "sam@example.org"]
    mail = mails[0].message
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["List-Unsubscribe"].strip().startswith("<https://hearth.example.org/unsubscribe/")
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
    assert "Five-minute check-in at 9:00 PM" in text


@pytest.mark.parametrize(
    ("status", "code", "state", "last_error"),
    [
        (400, 21211, "failed", "twilio 21211"),
        (400, 21408, "failed", "twilio 21408: region not enabled"),
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
    d = _dispatcher(_hearth(db, clock, **peers.sections(twilio_standin, smtp_sink)))
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
    assert twilio_standin.accepted() == [] and twilio_standin.posts == 1
    assert smtp_sink.distinct_per_recipient() == {"alice@example.org": 1, "sam@example.org": 1}


def test_transient_errors_retry_with_backoff_and_retry_after(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _setup(db, clock)
    d = _dispatcher(_hearth(db, clock, **peers.sections(twilio_standin, smtp_sink)))
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
    # Three requests, one text: the refusals were known refusals, never asked about.
    assert twilio_standin.posts == 3 and twilio_standin.accepted_per_recipient() == {ALICE: 1}
    assert twilio_standin.lookups == []


def test_retries_stop_at_expiry(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _setup(db, clock)
    d = _dispatcher(_hearth(db, clock, **peers.sections(twilio_standin, smtp_sink)))
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
    d = _dispatcher(_hearth(db, clock, **peers.sections(twilio_standin, smtp_sink)))
    smtp_sink.reject_to("alice@example.org", code=550)
    smtp_sink.reject_to("sam@example.org", code=451)
    clock.set(TONIGHT)
    tally = d.run_once()
    assert (tally.sent, tally.failed, tally.retried) == (1, 1, 1)
    assert smtp_sink.accepted() == []  # both refused: the one sent is Alice's text
    assert twilio_standin.accepted_per_recipient() == {ALICE: 1}


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


def test_a_claim_lost_while_waiting_is_neither_sent_nor_finished(
    db: Database, clock: FakeClock
) -> None:
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
    # The claim is checked right before the send: the stalled worker sends nothing.
    assert out.getvalue().count("--- ") == 3
    assert _states_tonight(db) == {"sent"}


def test_a_stalled_claim_nobody_took_is_renewed_and_sent_unless_stale(
    db: Database, clock: FakeClock
) -> None:
    _setup(db, clock)
    hearth = _hearth(db, clock, daemon={"lease_seconds": 60})
    out = io.StringIO()
    d = _dispatcher(hearth, {ch: ConsoleTransport(ch, out) for ch in Channel})
    clock.set(TONIGHT)
    token, ids = d.claim(10)
    jobs = d.prepare(token, ids)
    clock.advance(timedelta(seconds=61))  # past the lease, but no worker reclaimed the rows
    d.send(jobs[0])
    d.wait_idle()
    assert out.getvalue().count("--- ") == 1 and d.tally.sent == 1
    clock.advance(timedelta(minutes=30))  # the others waited until they went stale
    for job in jobs[1:]:
        d.send(job)
    d.wait_idle()
    assert out.getvalue().count("--- ") == 1 and d.tally.expired == 2
    with db.session() as s:
        states = sorted(r.state.value for r in s.scalars(sa.select(Reminder)) if r.id in ids)
    assert states == ["expired", "expired", "sent"]


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


def _couples_with_sms(db: Database, clock: FakeClock, n: int) -> None:
    """``n`` couples whose check-in nudges (Alice: SMS and email, Sam: email) are due TONIGHT."""
    now = clock.now()
    for i in range(n):
        cid = couple_with_partners(db, now, name=f"Couple {i}")
        add_ritual(db, now, cid, "five-minute-check-in")
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)


class _HeldPacing(Transport):
    """A real transport whose pacing holds every message until ``gate`` opens."""

    def __init__(self, inner: Transport, gate: threading.Event) -> None:
        self.inner, self.gate, self.channel = inner, gate, inner.channel

    def pace(self, message: Message, interrupt: threading.Event | None = None) -> float:
        self.gate.wait()
        return 0.0

    def capacity(self, seconds: float) -> int | None:
        return self.inner.capacity(seconds)

    def send(self, message: Message) -> Receipt:
        return self.inner.send(message)

    def close(self) -> None:
        self.inner.close()


def test_claims_take_no_more_sms_than_pacing_sends_in_half_a_lease(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _couples_with_sms(db, clock, 5)
    cfg = peers.sections(twilio_standin, smtp_sink)
    cfg["twilio"].update(sender_rate_per_second=0.5, account_rate_per_second=100)
    hearth = _hearth(db, clock, daemon={"lease_seconds": 20}, **cfg)
    gate = threading.Event()
    transports = build(hearth.settings, hearth.clock)
    transports[Channel.SMS] = _HeldPacing(transports[Channel.SMS], gate)
    d = _dispatcher(hearth, transports)
    # 0.5 segments a second for 10 s (half the lease), at two segments a text: 2 texts.
    assert d.caps() == {Channel.SMS: 2}
    clock.set(TONIGHT)
    token, ids = d.claim(100, d.caps())
    with db.session() as s:
        claimed = [s.get(Reminder, i) for i in ids]
    channels = sorted(r.channel.value for r in claimed if r is not None)
    assert channels == ["email"] * 10 + ["sms"] * 2  # email is not paced
    d.submit(d.prepare(token, ids))
    assert d.caps() == {Channel.SMS: 0}  # two texts wait for pacing
    assert d.claim(100, d.caps())[1] == []  # the other three stay in the outbox
    gate.set()
    d.wait_idle()
    assert d.caps() == {Channel.SMS: 2}
    assert d.run_once().sent == 3  # run_once claims within the cap too, pass after pass
    assert len(twilio_standin.sent) == 5


def _console(hearth: Hearth, out: io.StringIO) -> Dispatcher:
    return _dispatcher(hearth, {ch: ConsoleTransport(ch, out) for ch in Channel})


def test_a_moved_occurrence_is_announced_at_its_new_time(db: Database, clock: FakeClock) -> None:
    cid = _setup(db, clock)
    with db.session() as s:
        ritual = s.scalars(sa.select(Ritual)).one()
        skips.move(s, clock.now(), ritual, TONIGHT, datetime(2026, 1, 5, 22, 30))  # Berlin
    with db.write_engine.begin() as conn:
        planner.replan(conn, clock.now(), cid, timedelta(hours=48), 30)
    out = io.StringIO()
    d = _console(_hearth(db, clock), out)
    clock.set(TONIGHT)
    assert d.run_once().claimed == 0  # nothing at the old time
    clock.set(TONIGHT + timedelta(minutes=90))
    assert d.run_once().sent == 3
    text = out.getvalue()
    # The text, and each email's subject and first line.
    assert text.count("Five-minute check-in at 10:30 PM") == 4  # the discreet text has no title
    assert "a moment for you two at 10:30 PM" in text
    assert "9:00 PM" not in text


def test_a_pause_ending_before_an_occurrence_lets_its_early_nudge_out(
    db: Database, clock: FakeClock
) -> None:
    """The planner plans an occurrence after a pause; the send-time check must judge it the
    same way (by the occurrence), not by whether the pause is still on at the nudge."""
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(
        db, now, cid, kind="custom", title="Check-in", at="21:00", every="daily", remind="0,30m"
    )
    with db.session() as s:
        couple = s.get(Couple, cid)
        assert couple is not None
        couples.pause(s, now, couple, TONIGHT - timedelta(minutes=15))
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)
    out = io.StringIO()
    d = _console(_hearth(db, clock), out)
    clock.set(TONIGHT - timedelta(minutes=30))  # still paused; the occurrence is not
    tally = d.run_once()
    assert (tally.sent, tally.skipped) == (3, 0)
    assert out.getvalue().count("Check-in at 9:00 PM") == 4  # each email twice
    assert "a moment for you two at 9:00 PM" in out.getvalue()  # the discreet text


def test_a_nudge_for_an_occurrence_inside_a_pause_is_skipped(
    db: Database, clock: FakeClock
) -> None:
    """The other side of the same rule: planned before the pause, its occurrence in it."""
    cid = _setup(db, clock)
    with db.session() as s:
        couple = s.get(Couple, cid)
        assert couple is not None
        couples.pause(s, clock.now(), couple, TONIGHT + timedelta(minutes=1))
    d = _console(_hearth(db, clock), io.StringIO())
    clock.set(TONIGHT)
    tally = d.run_once()
    assert (tally.sent, tally.skipped) == (0, 3)


def test_smtp_login_refused_is_permanent(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn
) -> None:
    _setup(db, clock)
    with SmtpSink("hearth", "right") as sink:
        cfg = peers.sections(twilio_standin, sink)
        cfg["smtp"].update(username="hearth", password="wrong")
        d = _dispatcher(_hearth(db, clock, **cfg))
        clock.set(TONIGHT)
        tally = d.run_once()
        assert (tally.sent, tally.failed, tally.retried) == (1, 2, 0)  # the SMS went out
        assert sink.messages == []
    with db.session() as s:
        emails = s.scalars(sa.select(Reminder).where(Reminder.channel == Channel.EMAIL)).all()
        tonight = [r for r in emails if r.occurrence_start == TONIGHT]
    assert {(r.state, r.last_error) for r in tonight} == {
        (ReminderState.FAILED, "smtp 535: login refused")
    }
    clock.advance(timedelta(minutes=5))
    assert d.run_once().claimed == 0  # never retried


def test_smtp_login_with_the_right_password_sends(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn
) -> None:
    _setup(db, clock)
    with SmtpSink("hearth", "right") as sink:
        cfg = peers.sections(twilio_standin, sink)
        cfg["smtp"].update(username="hearth", password="right")
        d = _dispatcher(_hearth(db, clock, **cfg))
        clock.set(TONIGHT)
        assert d.run_once().sent == 3
        assert {m.login for m in sink.messages} == {"hearth"}


def test_backoff_doubles_with_jitter_between_half_and_all_of_the_step() -> None:
    rng = random.Random(3)
    for attempts, step in [(1, 30), (2, 60), (3, 120), (5, 480), (6, 900), (12, 900)]:
        delays = [jittered(attempts, 30, 900, rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert max(delays) - min(delays) > step / 4  # really spread: no thundering herd


@pytest.mark.parametrize("trouble", ["429", "unreachable", "500"])
def test_transient_sms_trouble_is_retried_with_backoff_until_expiry(
    db: Database,
    clock: FakeClock,
    twilio_standin: TwilioStandIn,
    smtp_sink: SmtpSink,
    trouble: str,
) -> None:
    """Trouble that says the text was not taken (a 429, nobody listening, a 500 from the
    API itself) is retried with backoff until the reminder expires; nothing reaches Alice."""
    _setup(db, clock)
    cfg = peers.sections(twilio_standin, smtp_sink)
    if trouble == "429":
        twilio_standin.fail_to(ALICE, status=429, code=20429)
        error = "twilio 20429: too many requests"
    elif trouble == "unreachable":
        cfg["twilio"]["api_base_url"] = f"http://127.0.0.1:{free_port()}"  # nothing listens
        error = "twilio unreachable: NewConnectionError"
    else:
        twilio_standin.fail_to(ALICE, status=500, code=None)
        error = "twilio 20500: HTTP 500"
    base, cap = 120.0, 900.0
    d = _dispatcher(
        _hearth(db, clock, daemon={"retry_base_seconds": base, "retry_max_seconds": cap}, **cfg)
    )
    clock.set(TONIGHT)
    delays: list[float] = []
    while True:
        d.run_once()
        with db.session() as s:
            sms = _sms_tonight(s)
        if sms.state is not ReminderState.SCHEDULED:
            break
        assert sms.last_error == error
        step = min(cap, base * 2 ** (sms.attempts - 1))
        delay = (sms.next_attempt_at - clock.now()).total_seconds()
        assert step / 2 <= delay <= step  # exponential, with jitter in range
        assert sms.next_attempt_at < sms.expires_at  # never scheduled past expiry
        delays.append(delay)
        clock.set(sms.next_attempt_at)
    assert (sms.state, sms.last_error) == (ReminderState.EXPIRED, error)
    assert len(delays) >= 3 and sms.attempts == len(delays) + 1
    assert twilio_standin.accepted(ALICE) == []
    if trouble != "unreachable":
        assert twilio_standin.posts == sms.attempts  # each attempt was one request
        assert twilio_standin.lookups == []  # a refusal is known: nothing to ask


@pytest.mark.parametrize("trouble", ["timeout", "reset"])
def test_a_lost_answer_is_settled_through_the_provider_and_the_text_accepted_once(
    db: Database,
    clock: FakeClock,
    twilio_standin: TwilioStandIn,
    smtp_sink: SmtpSink,
    trouble: str,
) -> None:
    """Issue 25, item 1: Twilio takes the text but its answer never arrives (it answers after
    the client's timeout, or the connection drops after the request went out). The send is
    unknown, not failed: once the lease has run out the dispatcher asks Twilio's Messages list
    (To, DateSent), finds the text it sent, records it, and never POSTs it again. On main the
    timeout alone produced 6 accepted texts and an expired row."""
    _setup(db, clock)
    cfg = peers.sections(twilio_standin, smtp_sink)
    twilio_standin.now = clock.now  # DateSent as Hearth's clock tells it
    if trouble == "timeout":
        twilio_standin.latency = 1.0  # answers long after the client gave up
        cfg["twilio"]["timeout_seconds"] = 0.2
    else:
        twilio_standin.accept_then_drop(1)
    lease = 30.0
    d = _dispatcher(_hearth(db, clock, daemon={"lease_seconds": lease}, **cfg))
    clock.set(TONIGHT)
    with capture_logs() as logs:
        first = d.run_once()
    wait_for(lambda: twilio_standin.in_progress == 0, 10, "the stand-in's late answer")
    [taken] = twilio_standin.accepted(ALICE)
    with db.session() as s:
        sms = _sms_tonight(s)
        assert sms.state is ReminderState.SENDING  # main: 'scheduled', a retry soon
        assert sms.unknown_since == TONIGHT
    assert (first.unknown, first.retried) == (1, 0)
    clock.advance(timedelta(seconds=lease / 2))
    assert d.run_once().claimed == 0  # not asked before the lease has run out
    clock.advance(timedelta(seconds=lease / 2 + 1))
    with capture_logs() as more:
        settled = d.run_once()
    assert (settled.claimed, settled.sent, settled.retried) == (1, 1, 0)
    [lookup] = twilio_standin.lookups
    assert lookup.kind == "list" and lookup.query["To"] == ALICE and "DateSent>" in lookup.query
    assert twilio_standin.posts == 1  # no second POST
    assert twilio_standin.accepted(ALICE) == [taken]
    with db.session() as s:
        sms = _sms_tonight(s)
        assert (sms.state, sms.provider_message_id, sms.unknown_since) == (
            ReminderState.SENT,
            taken.sid,
            None,
        )
    clock.set(sms.expires_at + timedelta(hours=1))
    assert d.run_once().claimed == 0
    assert twilio_standin.accepted_per_recipient() == {ALICE: 1}
    assert ALICE not in repr(logs + more)  # the lookup's number is in no log line


PAUSE_NOTICE = "Hearth: Sam paused your reminders until further notice."


def _tell_alice(db: Database, now: datetime, times: int = 1) -> None:
    """Queue the same pause notice to Alice (a text and its email copy) ``times`` times."""
    with db.session() as s:
        alice = s.scalars(sa.select(Partner).where(Partner.phone == ALICE)).one()
        for _ in range(times):
            notices.tell(s, now, alice, PAUSE_NOTICE)


def _sms_sids(db: Database) -> list[str | None]:
    """The Message SID each SMS row records, in row order."""
    with db.session() as s:
        stmt = sa.select(Reminder.provider_message_id).where(Reminder.channel == Channel.SMS)
        return list(s.scalars(stmt.order_by(Reminder.id)))


def test_of_two_texts_alike_the_unknown_one_is_settled_with_its_own_message(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """Found by the generated histories: "Sam paused your reminders" twice in a minute
    (around a resume), the first one's answer lost. Settling it found the second one's text,
    the newest in Twilio's list, and recorded that SID twice. A message another reminder
    records is passed over: each row holds the text it sent."""
    couple_with_partners(db, clock.now())
    twilio_standin.now = clock.now
    lease = 30.0
    cfg = peers.sections(twilio_standin, smtp_sink)
    d = _dispatcher(_hearth(db, clock, daemon={"lease_seconds": lease}, **cfg))
    _tell_alice(db, clock.now())
    twilio_standin.accept_then_drop(1)
    assert d.run_once().unknown == 1
    clock.advance(timedelta(seconds=20))
    _tell_alice(db, clock.now())
    assert d.run_once().sent >= 1  # the second text (and Alice's email copies)
    clock.advance(timedelta(seconds=lease))
    assert d.run_once().sent == 1  # the first, settled
    d.close()
    first, second = twilio_standin.accepted(ALICE)
    assert _sms_sids(db) == [first.sid, second.sid]
    assert twilio_standin.posts == 2


def _second_alike_after_a_lost_one(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> tuple[Dispatcher, Dispatcher, float]:
    """Two workers; the pause notice to Alice sent by the first, Twilio's answer lost; 20 s
    later the same notice queued again. Returns both workers and the lease."""
    couple_with_partners(db, clock.now())
    twilio_standin.now = clock.now
    lease = 30.0
    hearth = _hearth(
        db, clock, daemon={"lease_seconds": lease}, **peers.sections(twilio_standin, smtp_sink)
    )
    d, other = _dispatcher(hearth), _dispatcher(hearth)
    _tell_alice(db, clock.now())
    twilio_standin.accept_then_drop(1)
    assert d.run_once().unknown == 1
    clock.advance(timedelta(seconds=20))
    _tell_alice(db, clock.now())
    return d, other, lease


def test_an_unknown_text_is_not_settled_with_an_alike_one_whose_outcome_is_not_written_yet(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """Found by the generated histories: the same notice twice, the first one's answer lost.
    While a second worker had sent the second (Twilio took it) but not yet written its SID,
    settling the first found the second's text, not yet anyone's, and both rows recorded it:
    the first text went unrecorded. A settle waits while a text to the same partner is on
    its way, and asks again a lease later."""
    d, other, lease = _second_alike_after_a_lost_one(db, clock, twilio_standin, smtp_sink)
    # The other worker claims the second text and Twilio takes it; its outcome is not
    # written yet (a worker's outcomes are written in batches) and its lease is kept alive.
    token, ids = other.claim(10)
    jobs = other.prepare(token, ids)
    (second_job,) = [j for j in jobs if j.channel is Channel.SMS]
    other.submit([j for j in jobs if j is not second_job])
    assert other.wait_idle(10)
    receipt = other.transports[Channel.SMS].send(second_job.message)
    clock.advance(timedelta(seconds=lease))
    assert claims.renew(db, second_job, clock.now() + timedelta(seconds=lease))
    d.run_once()  # the first is due to be settled
    other.finish(second_job, receipt, 0.0)
    assert other.wait_idle(10)
    clock.advance(timedelta(seconds=lease + 1))
    d.run_once()
    d.close()
    other.close()
    first, second = twilio_standin.accepted(ALICE)
    assert _sms_sids(db) == [first.sid, second.sid]
    assert twilio_standin.posts == 2


def test_two_alike_texts_both_unknown_are_settled_each_with_a_message_of_its_own(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """The same notice twice, both answers lost: settled in one pass, each found the newer
    text, not yet anyone's, and both rows recorded it. Of two settles to one number the
    lower row goes first; the other is asked again a lease later and finds the other text."""
    couple_with_partners(db, clock.now())
    twilio_standin.now = clock.now
    lease = 30.0
    cfg = peers.sections(twilio_standin, smtp_sink)
    d = _dispatcher(_hearth(db, clock, daemon={"lease_seconds": lease}, **cfg))
    _tell_alice(db, clock.now(), times=2)
    twilio_standin.accept_then_drop(2)
    assert d.run_once().unknown == 2
    for _ in range(2):
        clock.advance(timedelta(seconds=lease + 1))
        d.run_once()
    d.close()
    sids = {m.sid for m in twilio_standin.accepted(ALICE)}
    assert len(sids) == 2 and Counter(_sms_sids(db)) == Counter(sids)  # each recorded once
    assert twilio_standin.posts == 2


@pytest.mark.parametrize("asked", [503, 400])
def test_a_text_whose_worker_died_before_sending_is_not_settled_with_an_older_alike_one(
    db: Database,
    clock: FakeClock,
    twilio_standin: TwilioStandIn,
    smtp_sink: SmtpSink,
    asked: int,
) -> None:
    """Found by `make simulate`: two alike texts to one number. Twilio took the first but
    its answer was lost, and Twilio could not be asked about it (503: not now; 400: it
    refuses, so the first is given up as unknown). The worker that claimed the second died
    before sending it. Settling the second found the first's text and recorded it: the
    second was never sent, and (503) the first was sent again. Of alike unknown texts the
    older one is settled first; if it was given up, the second cannot be told apart and is
    given up too, visibly, rather than recorded with the first one's text."""
    d, dead, lease = _second_alike_after_a_lost_one(db, clock, twilio_standin, smtp_sink)
    assert len(dead.claim(10)[1]) == 2  # the second text and its email copy; then it dies
    clock.advance(timedelta(seconds=lease - 20 + 1))
    twilio_standin.fail_next(1, status=asked)  # asked about the first
    d.run_once()
    for _ in range(6):
        clock.advance(timedelta(seconds=lease / 2))
        d.run_once()
    d.close()
    dead.close()
    if asked == 503:
        first, second = twilio_standin.accepted(ALICE)
        assert _sms_sids(db) == [first.sid, second.sid]
        assert twilio_standin.posts == 2
    else:
        assert len(twilio_standin.accepted(ALICE)) == 1 and twilio_standin.posts == 1
        with db.session() as s:
            rows = s.execute(
                sa.select(Reminder.state, Reminder.provider_message_id, Reminder.last_error)
                .where(Reminder.channel == Channel.SMS)
                .order_by(Reminder.id)
            ).all()
        assert [(state, sid) for state, sid, _ in rows] == [(ReminderState.FAILED, None)] * 2
        assert all((error or "").startswith("outcome unknown: ") for _, _, error in rows)


def test_an_unknown_send_stays_unknown_while_twilio_cannot_be_asked(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """The answer was lost, and when the lease has run out Twilio's list answers 503: the
    text is neither sent again nor given up; a lease later the list answers and settles it."""
    _setup(db, clock)
    twilio_standin.accept_then_drop(1)
    lease = 30.0
    cfg = peers.sections(twilio_standin, smtp_sink)
    d = _dispatcher(_hearth(db, clock, daemon={"lease_seconds": lease}, **cfg))
    clock.set(TONIGHT)
    assert d.run_once().unknown == 1
    twilio_standin.fail_next(1, status=503)  # the list request
    clock.advance(timedelta(seconds=lease + 1))
    assert d.run_once().unknown == 1
    with db.session() as s:
        assert _sms_tonight(s).state is ReminderState.SENDING
    clock.advance(timedelta(seconds=lease + 1))
    assert d.run_once().sent == 1
    assert [lk.kind for lk in twilio_standin.lookups] == ["list", "list"]
    assert twilio_standin.posts == 1 and twilio_standin.accepted_per_recipient() == {ALICE: 1}


def test_an_unknown_send_twilio_will_not_answer_about_for_a_day_is_failed_visibly(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """Settling is bounded: a day past the reminder's expiry with Twilio's list still
    failing, the row is final (failed, "outcome unknown" and the cause), never sent again."""
    _setup(db, clock)
    twilio_standin.accept_then_drop(1)
    cfg = peers.sections(twilio_standin, smtp_sink)
    d = _dispatcher(_hearth(db, clock, **cfg))
    clock.set(TONIGHT)
    assert d.run_once().unknown == 1
    with db.session() as s:
        expires = _sms_tonight(s).expires_at
    clock.set(expires + timedelta(days=1))
    twilio_standin.fail_next(1, status=503)
    assert d.run_once().failed == 1
    with db.session() as s:
        sms = _sms_tonight(s)
        assert sms.state is ReminderState.FAILED
        assert sms.last_error == "outcome unknown: twilio 503: HTTP 503"
    clock.advance(timedelta(days=1))
    assert d.run_once().claimed == 0
    assert twilio_standin.posts == 1


def test_a_gateway_timeout_is_settled_and_sent_again_only_when_twilio_has_no_such_text(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """A proxy's 504: whether Twilio took the text is unknown. Twilio's list has no such
    text, so it is sent again, once: one accepted text in all."""
    _setup(db, clock)
    twilio_standin.fail_next(1, status=504, code=None)
    lease = 30.0
    d = _dispatcher(
        _hearth(
            db, clock, daemon={"lease_seconds": lease}, **peers.sections(twilio_standin, smtp_sink)
        )
    )
    clock.set(TONIGHT)
    assert d.run_once().unknown == 1
    assert twilio_standin.accepted(ALICE) == []
    clock.advance(timedelta(seconds=lease + 1))
    tally = d.run_once()  # the lookup finds nothing; the row is due again and goes out
    assert (tally.retried, tally.sent) == (1, 1)
    assert [lk.kind for lk in twilio_standin.lookups] == ["list", "list"]  # DateSent, queued
    assert twilio_standin.posts == 2 and len(twilio_standin.accepted(ALICE)) == 1
    with db.session() as s:
        sms = _sms_tonight(s)
        assert sms.state is ReminderState.SENT
        assert sms.provider_message_id == twilio_standin.accepted(ALICE)[0].sid


def test_a_120_character_title_with_emoji_reaches_twilio_with_its_time_and_stop(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, kind="custom", title=LONG_TITLE, at="21:00", every="daily")
    with db.session() as s:  # the title is on her lock screen only if she chose full text
        s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one().full_text = True
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)
    d = _dispatcher(_hearth(db, clock, **peers.sections(twilio_standin, smtp_sink)))
    clock.set(TONIGHT)
    assert d.run_once().sent == 3
    [sms] = twilio_standin.sent
    assert sms.body is not None and sms.params["To"] == "+4915123456789"
    assert num_segments(sms.body) <= 2
    assert sms.body.startswith("Hearth: " + LONG_TITLE[:30])
    assert " at 9:00 PM. " in sms.body and sms.body.endswith(SMS_HINTS)


@pytest.fixture
def pg_db(request: pytest.FixtureRequest, _migrated: dict[str, Database]) -> Database:
    """The migrated PostgreSQL database alone: for races only it lets two workers run."""
    return _database("postgres", request, _migrated)


@pytest.mark.postgres
def test_two_workers_give_both_partners_one_prompt_and_advance_the_rotation_once(
    pg_db: Database, clock: FakeClock
) -> None:
    db = pg_db
    _setup(db, clock)
    hearth = _hearth(db, clock)
    out = io.StringIO()
    transports: dict[Channel, Transport] = {ch: ConsoleTransport(ch, out) for ch in Channel}
    # Different seeds: left alone, the two would shuffle the pool differently.
    first = Dispatcher(hearth, transports, rng=random.Random(1))
    second = Dispatcher(hearth, transports, rng=random.Random(2))
    clock.set(TONIGHT)
    t1, ids1 = first.claim(1)  # Alice's text
    t2, ids2 = second.claim(1)  # Alice's email
    with db.session() as s:
        prompts.sync_builtin(s, clock.now())  # as the daemon does at start
        ritual = s.scalars(sa.select(Ritual)).one()
        s.add(PromptRotation(ritual_id=ritual.id, remaining=[], updated_at=clock.now()))
    # Hold the ritual's rotation row as a third worker in the middle of its batch would.
    with db.engine.connect() as holder:
        holder.execute(
            sa.select(PromptRotation).where(PromptRotation.ritual_id == ritual.id).with_for_update()
        )
        pid = holder.scalar(sa.text("SELECT pg_backend_pid()"))
        results: dict[str, list[Any]] = {}
        threads = [
            threading.Thread(target=lambda: results.update(a=first.prepare(t1, ids1))),
            threading.Thread(target=lambda: results.update(b=second.prepare(t2, ids2))),
        ]
        for t in threads:
            t.start()
        # Both workers queue behind the held row (without the lock they would not wait).
        wait_for(lambda: _blocked_by(db, pid) == 2, 10, "both workers waiting for the rotation")
        holder.rollback()
    for t in threads:
        t.join()
    assert len(results["a"]) == len(results["b"]) == 1
    with db.session() as s:
        rows = list(s.scalars(sa.select(Reminder).where(Reminder.id.in_(ids1 + ids2))))
        rotation = s.get(PromptRotation, ritual.id)
        pool = s.scalars(
            sa.select(sa.func.count())
            .select_from(Prompt)
            .where(Prompt.kind == ritual.kind, Prompt.enabled)
        ).one()
    [prompt_id] = {r.prompt_id for r in rows}  # one prompt for the evening
    assert prompt_id is not None and rotation is not None
    # Taken from the rotation once: the rest of the cycle is still to come.
    assert rotation.last_prompt_id == prompt_id and len(rotation.remaining) == pool - 1
    assert prompt_id not in rotation.remaining


def _blocked_by(db: Database, pid: int) -> int:
    """Backends waiting for ``pid``, directly or behind one that does (a row's second
    waiter queues behind its first)."""
    with db.engine.connect() as conn:
        return int(
            conn.scalar(
                sa.text(
                    "WITH w AS (SELECT pid, pg_blocking_pids(pid) AS b FROM pg_stat_activity) "
                    "SELECT count(*) FROM w WHERE :pid = ANY(w.b) OR EXISTS "
                    "(SELECT 1 FROM w AS v WHERE v.pid = ANY(w.b) AND :pid = ANY(v.b))"
                ),
                {"pid": pid},
            )
        )


def test_a_stop_ends_waits_for_pacing_and_hands_those_rows_back(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _couples_with_sms(db, clock, 3)
    cfg = peers.sections(twilio_standin, smtp_sink)
    cfg["twilio"].update(sender_rate_per_second=0.01)  # the next texts: minutes away
    hearth = _hearth(db, clock, **cfg)
    transports = build(hearth.settings, hearth.clock)
    transports[Channel.SMS].pace(Message(to="+15550000000", text="x"))  # spends the one token
    d = _dispatcher(hearth, transports)
    clock.set(TONIGHT)
    token, ids = d.claim(100)
    d.submit([job for job in d.prepare(token, ids) if job.channel is Channel.SMS])
    assert d.stop(30) == 0  # long before the pacer would have let them go
    assert d.tally.released == 3 and twilio_standin.requests == []
    with db.session() as s:
        sms = s.scalars(sa.select(Reminder).where(Reminder.channel == Channel.SMS)).all()
    assert {(r.state.value, r.attempts) for r in sms if r.occurrence_start == TONIGHT} == {
        ("scheduled", 0)
    }


class _BusyOnce(Dispatcher):
    """The database refuses the first outcome write (another writer held it too long)."""

    busy = 1

    def _apply(self, batch: list[Any]) -> None:
        if self.busy:
            self.busy -= 1
            raise sa.exc.OperationalError("UPDATE", {}, Exception("database is locked"))
        super()._apply(batch)


def test_a_failed_outcome_write_is_tried_again_not_sent_again(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _setup(db, clock)
    hearth = _hearth(db, clock, **peers.sections(twilio_standin, smtp_sink))
    d = _BusyOnce(hearth, build(hearth.settings, hearth.clock), rng=random.Random(7))
    clock.set(TONIGHT)
    with capture_logs() as logs:
        assert d.run_once().sent == 3
    assert any(e["event"] == "outcomes_retrying" for e in logs)
    assert _states_tonight(db) == {"sent"}
    clock.advance(timedelta(seconds=hearth.settings.daemon.lease_seconds + 1))
    assert d.run_once().claimed == 0  # nothing left 'sending' to reclaim
    assert len(twilio_standin.sent) == 1 and len(smtp_sink.messages) == 2


def test_outcomes_the_database_never_takes_are_given_up_after_a_lease_of_waits(
    db: Database,
) -> None:
    """Issue 25, item 12: the finisher took its deadline from the injected clock and slept in
    real time, so with a fake clock a persistent failure retried forever. It now counts its
    own waits: after about a lease it gives up, and the rows are settled with the provider
    once their lease has run out."""
    cfg = make_settings(db, daemon={"lease_seconds": 5}).daemon
    tries: list[int] = []

    def refuse(batch: list[Any]) -> None:
        tries.append(len(batch))
        raise sa.exc.OperationalError("UPDATE", {}, Exception("disk I/O error"))

    f = Finisher(refuse, cfg, threading.Condition())
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(f.write_until_done([])), daemon=True)
    worker.start()
    worker.join(30)
    assert result == [False]
    assert len(tries) == 5  # waits of 0.2, 0.4, 0.8 and 1.6 s; the next would pass 5 s


def test_a_retry_for_a_time_edited_away_is_not_sent(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """Tonight's text fails (Twilio 500) and waits for its retry; meanwhile the check-in
    moves to 22:00 for good. The retry stands for 21:00, which no longer exists."""
    cid = _setup(db, clock)
    hearth = _hearth(db, clock, **peers.sections(twilio_standin, smtp_sink))
    d = _dispatcher(hearth)
    twilio_standin.fail_to("+4915123456789", status=500, code=None)
    clock.set(TONIGHT)
    assert d.run_once().retried == 1
    twilio_standin.clear_fail_to()
    with db.session() as s:
        [ritual] = rituals.list_for(s, couples.resolve(s, cid))
        rituals.edit(s, clock.now(), ritual, rituals.RitualSpec(at="22:00"))
        retry_at = _sms_tonight(s).next_attempt_at
    clock.set(retry_at)
    tally = d.run_once()
    assert (tally.sent, tally.cancelled) == (0, 1)
    with db.session() as s:
        assert _sms_tonight(s).last_error == "occurrence no longer planned"
    assert [r for r in twilio_standin.requests if r.sid] == []


def test_outcomes_written_together_change_only_rows_still_claimed(
    db: Database, clock: FakeClock
) -> None:
    """Outcomes reach the database in batches. A text that went out while another worker took
    its row over (the lease ran out mid-send) changes nothing: the taker's claim stands. The
    others are each written as they ended, a receipt and a retry side by side."""
    _setup(db, clock)
    hearth = _hearth(db, clock, daemon={"lease_seconds": 60})
    transports: dict[Channel, Transport] = {
        ch: ConsoleTransport(ch, io.StringIO()) for ch in Channel
    }
    first, second = _dispatcher(hearth, transports), _dispatcher(hearth, transports)
    clock.set(TONIGHT)
    token, ids = first.claim(10)
    jobs = first.prepare(token, ids)
    assert len(jobs) == 3
    clock.advance(timedelta(seconds=61))
    taken_token, [taken] = second.claim(1)
    mine = [job for job in jobs if job.id != taken]
    lost = next(job for job in jobs if job.id == taken)
    first.finish(mine[0], Receipt(provider_id="SM-first"), 0.2)
    first.finish(mine[1], TransportError("smtp busy"), 0.2)
    first.finish(lost, Receipt(provider_id="SM-late"), 0.2)
    first.wait_idle()
    assert (first.tally.sent, first.tally.retried, first.tally.lost_claims) == (1, 1, 1)
    with db.session() as s:
        rows = {r.id: r for r in s.scalars(sa.select(Reminder).where(Reminder.id.in_(ids)))}
    assert (rows[mine[0].id].state, rows[mine[0].id].provider_message_id) == (
        ReminderState.SENT,
        "SM-first",
    )
    assert rows[mine[1].id].state is ReminderState.SCHEDULED
    assert rows[mine[1].id].last_error == "smtp busy"
    assert (rows[taken].state, rows[taken].claim_token) == (ReminderState.SENDING, taken_token)
    assert rows[taken].provider_message_id is None
