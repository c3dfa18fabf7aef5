"""Replies and the repair flow, through the service (the webhook tests cover HTTP)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import (
    Channel,
    CheckIn,
    ConsentRecord,
    ConsentState,
    Event,
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
from service.domain import couples, partners
from service.domain.events import EventType
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from service.replies import inbound, repair
from service.replies.reactions import react
from tests.conftest import Cli, make_settings, snapshot
from tests.factories import TONIGHT, add_ritual, check_in_sent, couple_with_partners


@pytest.fixture
def sent(hearth: Hearth) -> Dispatcher:
    return check_in_sent(hearth)


def reply(hearth: Hearth, body: str, sid: str | None = None, name: str = "Alice") -> str | None:
    with hearth.db.session(immediate=True) as s:
        p = s.scalars(sa.select(Partner).where(Partner.name == name)).one()
        return inbound.handle(hearth, s, hearth.clock.now(), p, body, sid)


def _replies(db: Database) -> list[tuple[str | None, str]]:
    with db.session() as s:
        return [(r.keyword, r.action) for r in s.scalars(sa.select(Reply).order_by(Reply.id))]


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ("stop", "STOP"),
        ("  Stop. ", "STOP"),
        ("UNSUBSCRIBE", "UNSUBSCRIBE"),
        ("quit!", "QUIT"),
        ("snooze 45", "SNOOZE"),
        ("Done!", "DONE"),
        ("help?", "HELP"),
        ("stop by later", None),
        ("I'm done with this", None),
        ("", None),
    ],
)
def test_parse(body: str, keyword: str | None) -> None:
    assert inbound.parse(body).keyword == keyword


def test_stop_cancels_pending_sms_first_and_start_restores(
    hearth: Hearth, db: Database, sent: Dispatcher
) -> None:
    answer = reply(hearth, "STOP", "SM1")
    assert answer == inbound.STOPPED_TEXT
    with db.session() as s:
        alice = s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one()
        assert alice.sms_consent is ConsentState.OPTED_OUT
        pending_sms = s.scalars(
            sa.select(Reminder).where(
                Reminder.partner_id == alice.id,
                Reminder.channel == Channel.SMS,
                Reminder.state == ReminderState.SCHEDULED,
            )
        ).all()
        assert pending_sms == []
        rec = s.scalars(sa.select(ConsentRecord).order_by(ConsentRecord.id.desc())).first()
        assert rec is not None and (rec.state, rec.source) == (ConsentState.OPTED_OUT, "sms STOP")
        # Email goes on: Alice's email reminder for tomorrow is still planned.
        assert s.scalar(
            sa.select(sa.func.count()).where(
                Reminder.partner_id == alice.id,
                Reminder.channel == Channel.EMAIL,
                Reminder.state == ReminderState.SCHEDULED,
            )
        )
    assert reply(hearth, "STOP", "SM1") is None  # Twilio retried the webhook: no second act
    assert reply(hearth, "what now", "SM2") is None  # opted out: stored, never answered
    assert reply(hearth, "START", "SM3") == inbound.STARTED_TEXT
    with db.session() as s:
        alice = s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one()
        assert alice.sms_consent is ConsentState.CONSENTED
    assert [k for k, _ in _replies(db)] == ["STOP", None, "START"]


def test_done_marks_the_latest_occurrence(hearth: Hearth, db: Database, sent: Dispatcher) -> None:
    assert "marked done" in (reply(hearth, "done") or "")
    reply(hearth, "DONE")  # twice is still one check-in
    with db.session() as s:
        rows = s.execute(sa.select(CheckIn.occurrence_start, CheckIn.source)).all()
    assert rows == [(TONIGHT, "sms")]


def test_skip_skips_the_next_occurrence_for_both(
    hearth: Hearth, db: Database, sent: Dispatcher, clock: FakeClock
) -> None:
    answer = reply(hearth, "skip")
    assert answer is not None and "skipped" in answer
    with db.session() as s:
        [exc] = s.scalars(sa.select(OccurrenceException)).all()
        assert exc.original_start == TONIGHT + timedelta(days=1)  # tonight's has started
        assert exc.source == "sms"
        cid = exc.ritual.couple_id
    with db.write_engine.begin() as conn:
        planner.replan(conn, clock.now(), cid, timedelta(hours=48), 30)
    with db.session() as s:
        tomorrow = s.scalars(
            sa.select(Reminder.state).where(Reminder.occurrence_start == exc.original_start)
        ).all()
    assert set(tomorrow) == {ReminderState.CANCELLED}


def test_snooze_resends_later_and_never_past_expiry(
    hearth: Hearth, db: Database, sent: Dispatcher, clock: FakeClock
) -> None:
    assert "9:21 PM" in (reply(hearth, "snooze 20") or "")
    assert "9:29 PM" in (reply(hearth, "SNOOZE 120") or "")  # clamped: stale from 21:30
    clock.advance(timedelta(minutes=20))
    assert sent.run_once().sent == 0  # the second snooze replaced the first
    with db.session() as s:
        snoozes = s.scalars(
            sa.select(Reminder).where(Reminder.purpose == ReminderPurpose.SNOOZE)
        ).all()
    assert sorted((r.state.value, r.last_error) for r in snoozes) == [
        ("cancelled", "snooze replaced"),
        ("scheduled", None),
    ]
    clock.advance(timedelta(minutes=8))
    assert sent.run_once().sent == 1  # one reminder, at 21:29


def test_a_snoozed_nudge_is_not_sent_once_its_occurrence_is_skipped(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    """Nudged half an hour ahead, Alice snoozes, then skips tonight: the snooze is void."""
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "five-minute-check-in", remind="30m")
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)
    out = io.StringIO()
    d = Dispatcher(hearth, {ch: ConsoleTransport(ch, out) for ch in Channel})
    clock.set(TONIGHT - timedelta(minutes=30))
    assert d.run_once().sent == 3
    assert "8:50 PM" in (reply(hearth, "snooze 20") or "")
    assert "skipped" in (reply(hearth, "skip") or "")
    clock.set(TONIGHT - timedelta(minutes=10))
    out.truncate(0)
    tally = d.run_once()
    # The snooze is void; the one text that goes is Sam's note of what Alice skipped.
    assert (tally.sent, tally.cancelled) == (1, 1)
    assert "--- email to sam@example.org" in out.getvalue()
    assert "Alice skipped Five-minute check-in on Mon, Jan 5, 9:00 PM" in out.getvalue()


def test_an_admin_cannot_undo_a_stop(hearth: Hearth, db: Database, sent: Dispatcher) -> None:
    run = Cli(hearth)
    reply(hearth, "STOP", "SM1")
    before = snapshot(db)
    result = run("partner", "edit", "Alice", "--sms-consent", "phone call")
    assert result.exit_code == 2 and "only START from their phone" in result.output
    assert snapshot(db) == before
    # A new number is a new consent question: the history says why consent was reset.
    run.ok("partner", "edit", "Alice", "--phone", "+4915198765432", "--sms-consent", "form")
    with db.session() as s:
        history = s.execute(
            sa.select(ConsentRecord.state, ConsentRecord.source).order_by(ConsentRecord.id)
        ).all()
    assert history[-3:] == [
        (ConsentState.OPTED_OUT, "sms STOP"),
        (ConsentState.UNKNOWN, "phone changed"),
        (ConsentState.CONSENTED, "form"),
    ]


def test_unknown_words_get_one_gentle_answer_a_day(
    hearth: Hearth, db: Database, sent: Dispatcher, clock: FakeClock
) -> None:
    assert reply(hearth, "love you") == inbound.GENTLE_TEXT
    assert reply(hearth, "really") is None
    clock.advance(timedelta(days=1, minutes=1))
    assert reply(hearth, "hello?") == inbound.GENTLE_TEXT
    assert reply(hearth, "HELP") == inbound.HELP_TEXT


def _react_all(hearth: Hearth, since: int = 0) -> None:
    with hearth.db.session() as s:
        evs = s.scalars(sa.select(Event).where(Event.id > since).order_by(Event.id)).all()
    for ev in evs:
        react(hearth, ev)


def test_repair_finds_a_calm_slot_for_both(hearth: Hearth, db: Database, clock: FakeClock) -> None:
    clock.set(datetime(2026, 1, 5, 19, 10, tzinfo=UTC))  # 20:10 in Berlin
    now = clock.now()
    cid = couple_with_partners(db, now, sam_tz="America/New_York")
    add_ritual(db, now, cid, "five-minute-check-in")  # 21:00-21:05 Berlin is taken
    with db.session(immediate=True) as s:
        alice = s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one()
        alice.quiet_start, alice.quiet_end = (
            datetime(1, 1, 1, 22).time(),
            datetime(1, 1, 1, 7).time(),
        )
        c = alice.couple
        repair.request(s, now, c, alice, "sms")
    _react_all(hearth)
    with db.session() as s:
        req = s.scalars(sa.select(RepairRequest)).one()
        assert req.state is RepairState.SCHEDULED and req.slot_start is not None
        # Cool-off ends 22:10 Berlin; Alice's quiet hours run 22:00-07:00 and Sam's (default)
        # 22:00-08:00 New York = 04:00-14:00 Berlin: calm from 14:00, and a talk leaves each
        # an hour awake before it (invitation, 30-minute reminder): 15:00 Berlin.
        assert req.slot_start == datetime(2026, 1, 6, 14, 0, tzinfo=UTC)
        ritual = s.get(Ritual, req.ritual_id)
        assert ritual is not None and ritual.kind.value == "repair" and ritual.rrule is None
        assert "I feel" in ritual.description
        msgs = s.scalars(sa.select(Reminder).where(Reminder.ritual_id == ritual.id)).all()
        purposes = sorted((r.purpose.value, r.channel.value) for r in msgs)
    assert purposes == [
        ("followup", "email"),
        ("followup", "email"),
        ("followup", "sms"),
        ("invite", "email"),
        ("invite", "email"),
        ("invite", "sms"),
    ]
    before = snapshot(db)
    _react_all(hearth)  # seeing the events again changes nothing
    assert snapshot(db) == before


def test_repair_without_a_slot_tells_both(hearth: Hearth, db: Database, clock: FakeClock) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    with db.session(immediate=True) as s:
        for p in s.scalars(sa.select(Partner)):
            p.quiet_start, p.quiet_end = (
                datetime(1, 1, 1, 0).time(),
                datetime(1, 1, 1, 23, 50).time(),
            )
        c = couples.resolve(s, cid)
        repair.request(s, now, c, None, "admin")
    _react_all(hearth)
    with db.session() as s:
        req = s.scalars(sa.select(RepairRequest)).one()
        notices = s.scalars(
            sa.select(Reminder).where(Reminder.purpose == ReminderPurpose.NOTICE)
        ).all()
        types = s.scalars(sa.select(Event.type).order_by(Event.id)).all()
    assert req.state is RepairState.NO_SLOT
    assert len(notices) == 3 and all("calm time" in (n.body or "") for n in notices)
    assert EventType.REPAIR_NO_SLOT.value in types


def test_invitations_are_discreet_on_sms(hearth: Hearth, db: Database, clock: FakeClock) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    with db.session(immediate=True) as s:
        repair.request(s, now, couples.resolve(s, cid), None, "admin", at=now + timedelta(hours=3))
    _react_all(hearth)
    out = io.StringIO()
    d = Dispatcher(hearth, {ch: ConsoleTransport(ch, out) for ch in Channel})
    assert d.run_once().sent == 3
    sms = out.getvalue().split("--- ")[1:]
    text = next(m for m in sms if m.startswith("sms"))
    assert "repair" not in text.lower() and "conflict" not in text.lower()
    assert "a moment for you two is set for" in text


def _both_text(hearth: Hearth, db: Database, clock: FakeClock) -> Dispatcher:
    """Alice and Sam both get tonight's check-in by text (Sam in New York); sent at 21:00."""
    now = clock.now()
    cid = couple_with_partners(db, now, sam_tz="America/New_York")
    with db.session() as s:
        sam = s.scalars(sa.select(Partner).where(Partner.name == "Sam")).one()
        partners.edit(s, now, sam, phone="+12125550123", channels="sms", sms_consent="form")
    add_ritual(db, now, cid, "five-minute-check-in")
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)
    out = io.StringIO()
    d = Dispatcher(hearth, {ch: ConsoleTransport(ch, out) for ch in Channel})
    clock.set(TONIGHT)
    assert d.run_once().sent == 3
    return d


def _chases(db: Database) -> list[tuple[str, str, datetime]]:
    with db.session() as s:
        rows = s.execute(
            sa.select(Partner.name, Reminder.state, Reminder.due_at)
            .join(Partner, Partner.id == Reminder.partner_id)
            .where(Reminder.purpose == ReminderPurpose.CHASE)
        ).all()
    return [(name, state.value, due) for name, state, due in rows]


def test_one_gentle_text_goes_to_the_partner_who_has_not_answered(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    d = _both_text(hearth, db, clock)
    clock.advance(timedelta(minutes=20))
    assert "marked done" in (reply(hearth, "done", "SM1", name="Sam") or "")
    assert "marked done" in (reply(hearth, "Done!", "SM2", name="Sam") or "")  # still one chase
    # Three hours before the grace period ends (tomorrow's 21:00 Berlin): 18:00 Berlin.
    due = TONIGHT + timedelta(days=1, hours=-3)
    assert _chases(db) == [("Alice", "scheduled", due)]
    out = io.StringIO()
    d.transports = {ch: ConsoleTransport(ch, out) for ch in Channel}
    clock.set(due)
    assert d.run_once().sent == 1
    text = out.getvalue()
    assert "--- sms to +4915123456789" in text
    assert "your partner marked Monday's moment done" in text  # discreet: no title
    assert "STOP to opt out" in text


def test_no_gentle_text_once_the_partner_has_answered(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    d = _both_text(hearth, db, clock)
    reply(hearth, "done", "SM1", name="Sam")
    reply(hearth, "done", "SM2", name="Alice")  # the chase for Alice is now moot
    clock.set(TONIGHT + timedelta(days=1, hours=-3))
    tally = d.run_once()
    assert (tally.sent, tally.skipped) == (0, 1)
    assert _chases(db) == [("Alice", "skipped", TONIGHT + timedelta(days=1, hours=-3))]


def test_the_gentle_text_can_be_turned_off(db: Database, clock: FakeClock) -> None:
    hearth = Hearth(settings=make_settings(db, replies={"chase_hours": 0}), db=db, clock=clock)
    _both_text(hearth, db, clock)
    reply(hearth, "done", "SM1", name="Sam")
    assert _chases(db) == []


def test_done_after_the_chase_marks_the_chased_occurrence(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    """With a nudge four hours ahead, tomorrow's nudge (17:00 Berlin) goes out before the
    chase about tonight (18:00): Alice's DONE answers the chase, the latest text."""
    now = clock.now()
    cid = couple_with_partners(db, now, sam_tz="America/New_York")
    with db.session() as s:
        sam = s.scalars(sa.select(Partner).where(Partner.name == "Sam")).one()
        partners.edit(s, now, sam, phone="+12125550123", channels="sms", sms_consent="form")
    add_ritual(db, now, cid, "five-minute-check-in", remind="0,4h")
    d = Dispatcher(hearth, {ch: ConsoleTransport(ch, io.StringIO()) for ch in Channel})
    clock.set(TONIGHT)
    planner.plan(db.write_engine, clock.now(), timedelta(hours=48), 30)
    d.run_once()
    reply(hearth, "done", "SM1", name="Sam")
    clock.set(TONIGHT + timedelta(hours=20))  # tomorrow 17:00 Berlin: the 4-hour nudge
    assert d.run_once().sent >= 2
    clock.set(TONIGHT + timedelta(hours=21))  # 18:00 Berlin: the chase
    assert d.run_once().sent == 1
    reply(hearth, "done", "SM2", name="Alice")
    with db.session() as s:
        alice = s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one()
        marked = s.scalars(
            sa.select(CheckIn.occurrence_start).where(CheckIn.partner_id == alice.id)
        ).all()
    assert marked == [TONIGHT]


def test_a_chase_waits_out_a_pause_that_began_after_the_occurrence(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    d = _both_text(hearth, db, clock)
    reply(hearth, "done", "SM1", name="Sam")
    with db.session() as s:
        couples.pause(s, clock.now(), couples.resolve(s, "Alice & Sam"), None)
    clock.set(TONIGHT + timedelta(days=1, hours=-3))
    tally = d.run_once()
    assert (tally.sent, tally.skipped) == (0, 1)
    assert _chases(db) == [("Alice", "skipped", TONIGHT + timedelta(days=1, hours=-3))]
