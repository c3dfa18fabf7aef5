from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from structlog.testing import capture_logs

from service.core.clock import FakeClock
from service.db.engine import Database
from service.db.models import (
    ConsentState,
    Couple,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
    Ritual,
)
from service.domain import couples, partners, rituals, skips
from service.outbox import planner
from tests.factories import add_ritual, couple_with_partners

H48 = timedelta(hours=48)


def _plan(db: Database, now: datetime) -> planner.PlanResult:
    return planner.plan(db.write_engine, now, H48, 30, count=True)


def _rows(db: Database, state: ReminderState | None = ReminderState.SCHEDULED) -> list[tuple]:
    with db.session() as s:
        stmt = sa.select(
            Reminder.due_at, Reminder.channel, Reminder.partner_id, Reminder.offset_minutes
        ).order_by(Reminder.due_at, Reminder.partner_id, Reminder.channel)
        # The planner's rows: a pending partner's opt-in confirmation is none of them.
        stmt = stmt.where(Reminder.purpose != ReminderPurpose.CONFIRM)
        if state is not None:
            stmt = stmt.where(Reminder.state == state)
        return [tuple(r) for r in s.execute(stmt)]


def _replan(db: Database, now: datetime, couple_id: int) -> planner.PlanResult:
    with db.write_engine.begin() as conn:
        return planner.replan(conn, now, couple_id, H48, 30)


def test_plans_each_partner_channel_and_offset_once(db: Database, clock: FakeClock) -> None:
    now = clock.now()  # Mon 2026-01-05 12:00 UTC
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "five-minute-check-in", remind="0,30")
    result = _plan(db, now)
    assert result.created == 12  # 2 evenings x 2 offsets x (Alice sms+email, Sam email)
    rows = _rows(db)
    assert {r[0] for r in rows} == {
        datetime(2026, 1, 5, 19, 30, tzinfo=UTC),
        datetime(2026, 1, 5, 20, 0, tzinfo=UTC),
        datetime(2026, 1, 6, 19, 30, tzinfo=UTC),
        datetime(2026, 1, 6, 20, 0, tzinfo=UTC),
    }
    assert _plan(db, now).created == 0  # idempotent
    clock.advance(timedelta(hours=24))
    assert _plan(db, clock.now()).created == 6  # the horizon rolled one evening on
    assert len(_rows(db)) == 18


def test_concurrent_planners_create_each_row_once(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    for i in range(20):
        cid = couple_with_partners(db, now, name=f"Couple {i}")
        add_ritual(db, now, cid, "five-minute-check-in")
        add_ritual(db, now, cid, "gratitude-three")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            planner.plan(db.write_engine, now, H48, 30, chunk=3)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.session() as s:
        total = s.scalar(sa.select(sa.func.count()).select_from(Reminder))
    assert total == 20 * 2 * 2 * 3  # couples x rituals x evenings x (Alice 2 + Sam 1)


def test_sms_only_with_consent_and_email_only_while_subscribed(
    db: Database, clock: FakeClock
) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now, sms_consent=False)
    add_ritual(db, now, cid, "five-minute-check-in")
    _plan(db, now)
    assert {r[1] for r in _rows(db)} == {"email"}
    with db.session() as s:
        alice = partners.resolve(s, "Alice")
        partners.set_consent(s, now, alice, ConsentState.CONSENTED, "START")
        sam = partners.resolve(s, "Sam")
        partners.set_consent(s, now, sam, ConsentState.OPTED_OUT, "unsubscribe", channel="email")  # type: ignore[arg-type]
    _replan(db, now, cid)
    by_partner = {(r[2], r[1]) for r in _rows(db)}
    with db.session() as s:
        ids = {p.name: p.id for p in s.scalars(sa.select(Partner))}
    assert by_partner == {(ids["Alice"], "sms"), (ids["Alice"], "email")}


def test_replan_follows_skip_edit_pause_and_remove(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    rid = add_ritual(db, now, cid, "five-minute-check-in")
    _plan(db, now)
    assert len(_rows(db)) == 6
    with db.session() as s:
        r = s.get(Ritual, rid)
        assert r is not None
        skips.skip(s, now, r, datetime(2026, 1, 6, 20, 0, tzinfo=UTC))
    result = _replan(db, now, cid)
    assert (result.cancelled, result.created) == (3, 0)
    assert {r[0] for r in _rows(db)} == {datetime(2026, 1, 5, 20, 0, tzinfo=UTC)}

    with db.session() as s:
        r = s.get(Ritual, rid)
        assert r is not None
        rituals.edit(s, now, r, rituals.RitualSpec(at="21:30"))  # also drops the skip
    result = _replan(db, now, cid)
    assert (result.cancelled, result.created) == (3, 6)
    assert {r[0] for r in _rows(db)} == {
        datetime(2026, 1, 5, 20, 30, tzinfo=UTC),
        datetime(2026, 1, 6, 20, 30, tzinfo=UTC),
    }

    with db.session() as s:
        c = s.get(Couple, cid)
        assert c is not None
        couples.pause(s, now, c, now + timedelta(hours=12))
    assert _replan(db, now, cid).cancelled == 3  # tonight's fall inside the pause
    with db.session() as s:
        c = s.get(Couple, cid)
        assert c is not None
        couples.resume(s, now, c)
    result = _replan(db, now, cid)
    assert (result.revived, result.created) == (3, 0)  # the same rows come back
    assert len(_rows(db)) == 6

    with db.session() as s:
        r = s.get(Ritual, rid)
        assert r is not None
        rituals.remove(s, now, r)
    _replan(db, now, cid)
    assert _rows(db) == []


def test_an_edit_never_touches_sent_reminders(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    rid = add_ritual(db, now, cid, "five-minute-check-in")
    _plan(db, now)
    with db.session() as s:
        s.execute(sa.update(Reminder).values(state=ReminderState.SENT))
        r = s.get(Ritual, rid)
        assert r is not None
        rituals.edit(s, now, r, rituals.RitualSpec(at="22:00"))
    _replan(db, now, cid)
    assert len(_rows(db, ReminderState.SENT)) == 6
    assert len(_rows(db, ReminderState.SCHEDULED)) == 6


def test_stale_reminders_are_not_planned_after_downtime(db: Database, clock: FakeClock) -> None:
    now = datetime(2026, 1, 5, 20, 20, tzinfo=UTC)  # 21:20 Berlin: the 21:00 nudge is fresh
    cid = couple_with_partners(db, now)
    add_ritual(db, now - timedelta(days=1), cid, "gratitude-three", at="21:00", remind="0")
    _plan(db, now)
    assert datetime(2026, 1, 5, 20, 0, tzinfo=UTC) in {r[0] for r in _rows(db)}
    with db.session() as s:
        s.execute(sa.delete(Reminder))
    _plan(db, now + timedelta(minutes=15))  # 21:35: more than 30 min late
    assert datetime(2026, 1, 5, 20, 0, tzinfo=UTC) not in {r[0] for r in _rows(db)}


def test_a_nudge_stays_fresh_for_the_longer_of_stale_minutes_and_half_the_ritual(
    db: Database, clock: FakeClock
) -> None:
    """stale_after_minutes (30), or half the ritual's length if that is longer (as
    config.example.toml now says): a five-minute check-in's nudge still goes 25 minutes late;
    a two-hour date night's for an hour."""
    day = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
    cid = couple_with_partners(db, day)
    add_ritual(db, day - timedelta(days=1), cid, "five-minute-check-in", remind="0")
    add_ritual(db, day - timedelta(days=1), cid, "date-night", remind="0", every="daily")

    def planned(at: datetime) -> set[tuple[datetime, int]]:
        with db.session() as s:
            s.execute(sa.delete(Reminder))
        _plan(db, at)
        return {r[0] for r in _rows(db)}

    check_in, date = (
        datetime(2026, 1, 5, 20, 0, tzinfo=UTC),
        datetime(2026, 1, 5, 18, 30, tzinfo=UTC),
    )
    assert check_in in planned(check_in + timedelta(minutes=25))
    assert check_in not in planned(check_in + timedelta(minutes=31))
    assert date in planned(date + timedelta(minutes=55))
    assert date not in planned(date + timedelta(minutes=61))


def test_all_day_rituals_nudge_at_nine_local(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "anniversary", on="2019-01-06")
    _plan(db, now)
    # The day's nudge at 09:00 Berlin; the week-ahead one, planned a day late, goes out at
    # once (its due time passed, the anniversary has not begun).
    assert {r[0] for r in _rows(db)} == {
        datetime(2026, 1, 6, 8, 0, tzinfo=UTC),
        datetime(2025, 12, 30, 8, 0, tzinfo=UTC),
    }


def test_a_moved_occurrence_is_retimed(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    rid = add_ritual(db, now, cid, "five-minute-check-in")
    _plan(db, now)
    with db.session() as s:
        r = s.get(Ritual, rid)
        assert r is not None
        skips.move(s, now, r, datetime(2026, 1, 6, 20, 0, tzinfo=UTC), datetime(2026, 1, 6, 22, 30))
    _replan(db, now, cid)
    assert {r[0] for r in _rows(db)} == {
        datetime(2026, 1, 5, 20, 0, tzinfo=UTC),
        datetime(2026, 1, 6, 21, 30, tzinfo=UTC),
    }
    assert len(_rows(db)) == 6


def test_one_couple_whose_data_cannot_be_planned_does_not_stop_the_others(
    db: Database, clock: FakeClock
) -> None:
    """A rule the recurrence code rejects, and a partner zone this system's tzdata lacks
    (written behind the CLI's back, or left by a tzdata update): those two couples are
    named and logged; the couples around them in the same chunk get their nudges."""
    now = clock.now()
    ids = [couple_with_partners(db, now, name=f"Couple {i}") for i in range(4)]
    for cid in ids:
        add_ritual(db, now, cid, "five-minute-check-in", remind="0")
    with db.begin() as conn:
        conn.execute(
            sa.update(Ritual).where(Ritual.couple_id == ids[1]).values(rrule="FREQ=SOMETIMES")
        )
        conn.execute(
            sa.update(Partner).where(Partner.couple_id == ids[2]).values(timezone="Mars/Olympus")
        )
    with capture_logs() as logs:
        result = _plan(db, now)
    assert result.unplannable == [ids[1], ids[2]]
    assert result.couples == 4
    with db.session() as s:
        planned = set(s.scalars(sa.select(Reminder.couple_id).distinct()))
    assert planned == {ids[0], ids[3]}
    failed = [e for e in logs if e["event"] == "plan_couple_failed"]
    assert [e["couple_id"] for e in failed] == [ids[1], ids[2]]
