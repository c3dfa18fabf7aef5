"""A ritual edited under a planned reminder: nothing goes out for the old time, counted at
the Twilio stand-in; and a plan pass that read the ritual before the edit inserts nothing
for the old time after the replan committed (issue 25, item 6)."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import sqlalchemy as sa

from service.channels import build_one
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, Reminder, ReminderPurpose, ReminderState, Ritual
from service.domain import rituals
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from tests.conftest import make_settings
from tests.factories import TONIGHT, add_ritual, couple_with_partners
from tests.interleave import Statements, wait_until
from tests.peers.twilio_standin import TwilioStandIn
from tests.test_webhooks import ALICE, Outbox, _sections

HORIZON = timedelta(hours=48)


def _edit(db: Database, clock: FakeClock, ritual_id: int, **spec: str) -> None:
    """``hearth ritual edit`` as the CLI runs it: the daemon has not replanned yet."""
    with db.session(immediate=True) as s:
        ritual = s.get(Ritual, ritual_id)
        assert ritual is not None
        rituals.edit(s, clock.now(), ritual, rituals.RitualSpec(**spec))


def _replan(db: Database, clock: FakeClock, couple_id: int) -> None:
    with db.write_engine.begin() as conn:
        planner.replan(conn, clock.now(), couple_id, HORIZON, 30)


def test_the_first_send_is_checked_against_the_current_schedule(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn
) -> None:
    """The check-in moved from 21:00 to 21:30 and the daemon has not replanned yet: the
    21:00 nudge, never tried before, is not sent; the 21:30 one is, once."""
    hearth = Hearth(settings=make_settings(db, **_sections(twilio_standin)), db=db, clock=clock)
    cid = couple_with_partners(db, clock.now())
    rid = add_ritual(db, clock.now(), cid, "five-minute-check-in")
    planner.plan(db.write_engine, clock.now(), HORIZON, 30)
    _edit(db, clock, rid, at="21:30")
    transports = {
        Channel.SMS: build_one(hearth.settings, Channel.SMS),
        Channel.EMAIL: Outbox(Channel.EMAIL),
    }
    d = Dispatcher(hearth, transports, rng=random.Random(4))
    clock.set(TONIGHT)
    d.run_once()
    assert [r.to for r in twilio_standin.sent] == []
    _replan(db, clock, cid)
    clock.set(TONIGHT + timedelta(minutes=30))
    d.run_once()
    clock.advance(timedelta(minutes=30))
    d.run_once()
    assert [r.to for r in twilio_standin.sent] == [ALICE]
    d.close()


def test_a_plan_pass_that_read_the_ritual_before_an_edit_adds_nothing_stale(
    db: Database, clock: FakeClock
) -> None:
    """The pass reads the ritual; the edit and its replan then run to completion (or wait
    for the pass, if it holds the ritual); only then does the pass insert."""
    cid = couple_with_partners(db, clock.now())
    rid = add_ritual(db, clock.now(), cid, "five-minute-check-in")
    cond = threading.Condition()
    read, edited, edit_over = threading.Event(), threading.Event(), threading.Event()
    threads: dict[str, int] = {}

    def hold_after_reading_the_ritual(statement: str) -> None:
        me = threading.get_ident()
        if me == threads.get("plan") and "FROM ritual" in statement and not read.is_set():
            read.set()
            wait_until(lambda: edit_over.is_set() or stmts.blocked(threads["edit"], by=me), cond)

    stmts = Statements(db, hold_after_reading_the_ritual)

    def plan() -> None:
        threads["plan"] = threading.get_ident()
        planner.plan(db.write_engine, clock.now(), HORIZON, 30)

    def edit() -> None:
        threads["edit"] = threading.get_ident()
        read.wait(30)
        try:
            _edit(db, clock, rid, at="21:30")
            _replan(db, clock, cid)
            edited.set()
        finally:  # a failed edit must not leave the plan pass holding its transaction open
            edit_over.set()

    workers = [threading.Thread(target=edit), threading.Thread(target=plan)]
    for w in workers:
        w.start()
        while w.ident not in threads.values():  # each names itself before the next starts
            with cond:
                cond.wait(0.01)
    for w in workers:
        w.join(60)
    stmts.close()
    assert read.is_set() and edited.is_set()
    with db.session() as s:
        starts = s.scalars(
            sa.select(Reminder.occurrence_start).where(
                Reminder.purpose == ReminderPurpose.NUDGE,
                Reminder.state == ReminderState.SCHEDULED,
            )
        ).all()
    # Berlin 21:30 is 20:30 UTC: no reminder is left waiting for the old 21:00.
    assert starts and {(t.hour, t.minute) for t in starts} == {(20, 30)}
