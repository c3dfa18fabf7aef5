"""The daemon's event watermark: what changed while no daemon ran is replanned at start, and
on PostgreSQL an event whose transaction commits after a later one's is still handled."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
import structlog
import structlog.testing
from sqlalchemy.orm import Session

from service.channels.base import Transport
from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import (
    Channel,
    DaemonState,
    Event,
    Reminder,
    ReminderState,
    RepairRequest,
    RepairState,
    Ritual,
)
from service.domain import couples, rituals, skips
from service.replies import repair
from service.runtime import event_cursor, replans
from service.runtime.daemon import Daemon
from tests.conftest import _database, make_settings
from tests.factories import TONIGHT, add_ritual, couple_with_partners


def _daemon(hearth: Hearth) -> Daemon:
    transports: dict[Channel, Transport] = {
        ch: ConsoleTransport(ch, io.StringIO()) for ch in Channel
    }
    return Daemon(hearth, transports=transports, web=False)


def _run_a_while(hearth: Hearth) -> None:
    """A daemon's life: start (catch up, plan), then stop, with nothing due meanwhile."""
    d = _daemon(hearth)
    d.start()
    d.stop()


def _tonight(db: Database) -> dict[datetime, set[tuple[str, datetime]]]:
    """Tonight's nudges: original start -> {(state, due)}."""
    out: dict[datetime, set[tuple[str, datetime]]] = {}
    with db.session() as s:
        for r in s.scalars(
            sa.select(Reminder).where(Reminder.occurrence_start < TONIGHT + timedelta(hours=3))
        ):
            out.setdefault(r.occurrence_start, set()).add((r.state.value, r.due_at))
    return out


def _watermark(db: Database) -> int | None:
    with db.engine.connect() as conn:
        return conn.scalar(
            sa.select(DaemonState.value).where(DaemonState.name == event_cursor.NAME)
        )


def _dues(db: Database, rid: int) -> list[datetime]:
    """When the ritual's nudges still to be sent are due."""
    with db.session() as s:
        stmt = sa.select(Reminder.due_at).where(
            Reminder.ritual_id == rid, Reminder.state == ReminderState.SCHEDULED
        )
        return list(s.scalars(stmt))


def _ritual(s: Session, rid: int) -> Ritual:
    ritual = s.get(Ritual, rid)
    assert ritual is not None
    return ritual


@pytest.mark.parametrize("edit", ["new time", "moved"])
def test_an_edit_made_while_no_daemon_ran_is_replanned_at_start(
    hearth: Hearth, db: Database, clock: FakeClock, edit: str
) -> None:
    cid = couple_with_partners(db, clock.now())
    rid = add_ritual(db, clock.now(), cid, "five-minute-check-in")
    _run_a_while(hearth)
    assert _tonight(db) == {TONIGHT: {("scheduled", TONIGHT)}}
    mark = _watermark(db)
    assert mark is not None and mark > 0

    # No daemon runs: tonight's check-in goes from 21:00 to 22:00 (Berlin).
    with db.session() as s:
        if edit == "new time":
            rituals.edit(s, clock.now(), _ritual(s, rid), rituals.RitualSpec(at="22:00"))
        else:
            skips.move(s, clock.now(), _ritual(s, rid), TONIGHT, datetime(2026, 1, 5, 22, 0))
    clock.advance(timedelta(minutes=5))
    _run_a_while(hearth)

    later = TONIGHT + timedelta(hours=1)
    if edit == "new time":  # a new occurrence: the old one's nudges are called off
        assert _tonight(db) == {
            TONIGHT: {("cancelled", TONIGHT)},
            later: {("scheduled", later)},
        }
    else:  # the same occurrence (its key is the original start), at its new time
        assert _tonight(db) == {TONIGHT: {("scheduled", later)}}
    assert (_watermark(db) or 0) > mark


@pytest.fixture
def pg_hearth(
    request: pytest.FixtureRequest, _migrated: dict[str, Database], clock: FakeClock
) -> Hearth:
    db = _database("postgres", request, _migrated)
    return Hearth(settings=make_settings(db), db=db, clock=clock)


@pytest.fixture
def two_couples(pg_hearth: Hearth, clock: FakeClock) -> tuple[int, int]:
    """Two couples with the nightly check-in; returns their rituals' ids."""
    db = pg_hearth.db
    rids = []
    for name in ("A", "B"):
        cid = couple_with_partners(db, clock.now(), name=name)
        rids.append(add_ritual(db, clock.now(), cid, "five-minute-check-in"))
    return rids[0], rids[1]


@pytest.mark.postgres
@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_an_event_committed_after_a_later_one_is_still_handled(
    pg_hearth: Hearth, clock: FakeClock, two_couples: tuple[int, int], outcome: str
) -> None:
    db = pg_hearth.db
    a, b = two_couples
    d = _daemon(pg_hearth)
    d.catch_up()
    d.plan()
    start = _watermark(db)
    assert start is not None

    # A's move takes an event id, then waits to commit; B's edit takes the next id and
    # commits first.
    slow = Session(db.engine, expire_on_commit=False)
    slow.begin()
    skips.move(slow, clock.now(), _ritual(slow, a), TONIGHT, datetime(2026, 1, 5, 22, 0))
    with db.session() as s:
        rituals.edit(s, clock.now(), _ritual(s, b), rituals.RitualSpec(title="Evening talk"))
    assert d.handle_events() == 1  # B's
    assert _watermark(db) == start  # held below A's id, which is not visible yet

    if outcome == "commit":
        slow.commit()
        slow.close()
        assert d.handle_events() == 1  # A's move, though its id is below one already seen
        with db.session() as s:
            moved = s.scalars(
                sa.select(Reminder.due_at).where(
                    Reminder.ritual_id == a, Reminder.occurrence_start == TONIGHT
                )
            ).all()
        assert set(moved) == {TONIGHT + timedelta(hours=1)}
        assert _watermark(db) == start + 2
    else:
        slow.rollback()
        slow.close()
        assert d.handle_events() == 0
        assert _watermark(db) == start  # a rolled-back id is waited for a while...
        clock.advance(timedelta(seconds=event_cursor.LAG_SECONDS))
        assert d.handle_events() == 0
        assert _watermark(db) == start + 2  # ...then passed over
    assert d.handle_events() == 0  # nothing is handled twice


def test_a_first_start_replays_only_what_can_still_matter(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    """No watermark stored yet (the first start after the upgrade): events older than the
    planning horizon and a day are not replayed; newer ones are."""
    cid = couple_with_partners(db, clock.now())
    add_ritual(db, clock.now(), cid, "five-minute-check-in")
    with db.engine.connect() as conn:
        first_ids = list(conn.scalars(sa.text("SELECT id FROM event ORDER BY id")))
    clock.advance(timedelta(days=4))
    with db.session() as s:
        rid = s.scalars(sa.select(Ritual.id)).one()
        rituals.edit(s, clock.now(), _ritual(s, rid), rituals.RitualSpec(at="22:00"))
    d = _daemon(hearth)
    with db.write_engine.begin() as conn:
        floor = d._events.load(conn, clock.now(), timedelta(hours=48, days=1))
    assert floor == first_ids[-1]  # the couple's creation: older than horizon + a day
    with db.session() as s:
        assert [e.type for e in d._events.fetch(s)] == ["ritual.changed"]


def test_one_couple_whose_replan_raises_holds_up_nobody_else(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    """Issue 25, item 7: A's ritual cannot be expanded (a rule that no parser reads); B's
    edit and B's repair request after it are still handled, A's failure is logged once
    over several polls and retried with backoff, and succeeds once A is repaired."""
    a = couple_with_partners(db, clock.now(), name="A")
    b = couple_with_partners(db, clock.now(), name="B")
    ra = add_ritual(db, clock.now(), a, "five-minute-check-in")
    rb = add_ritual(db, clock.now(), b, "five-minute-check-in")
    d = _daemon(hearth)
    d.handle_events()
    with db.session() as s:
        rituals.edit(s, clock.now(), _ritual(s, ra), rituals.RitualSpec(title="Talk"))
        _ritual(s, ra).rrule = "FREQ=FORTNIGHTLY"  # what a bad migration or hand edit leaves
    with db.session() as s:
        rituals.edit(s, clock.now(), _ritual(s, rb), rituals.RitualSpec(at="22:00"))
    with db.session(immediate=True) as s:
        repair.request(s, clock.now(), couples.resolve(s, "B"), None, "admin")
    with structlog.testing.capture_logs() as logs:
        assert d.handle_events() == 3
        for _ in range(3):  # later polls: the retry is not due yet, or fails again quietly
            d.handle_events()
            clock.advance(timedelta(seconds=replans.FIRST_RETRY))
    assert [e["couple_id"] for e in logs if e["event"] == "replan_failed"] == [a]
    assert d.replans.waiting == {a: "ValueError"}
    dues = _dues(db, rb)
    assert dues and all(due.hour == 21 for due in dues)  # 22:00 in Berlin
    with db.session() as s:
        [req] = s.scalars(sa.select(RepairRequest)).all()
        assert req.state is RepairState.SCHEDULED

    with db.session() as s:
        _ritual(s, ra).rrule = "FREQ=DAILY"
    clock.advance(timedelta(seconds=replans.MAX_RETRY))
    with structlog.testing.capture_logs() as logs:
        d.handle_events()
    assert [e["couple_id"] for e in logs if e["event"] == "replan_recovered"] == [a]
    assert d.replans.waiting == {}


def test_a_first_start_on_events_whose_ids_start_high_waits_for_no_phantom_gaps(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    """No watermark and every event recent, their ids far above 1 (older events pruned, the
    sequence not reset): the ids below the oldest are no transactions still open. On main
    each of them was a gap, every poll asked for all of them again, and the watermark
    stood still for a minute."""
    cid = couple_with_partners(db, clock.now())
    add_ritual(db, clock.now(), cid, "five-minute-check-in")
    with db.begin() as conn:
        conn.execute(sa.delete(DaemonState))
        oldest = conn.scalar(sa.select(sa.func.min(Event.id))) or 0
        conn.execute(sa.update(Event).values(id=Event.id + 50_000))
    d = _daemon(hearth)
    with db.begin() as conn:
        floor = d._events.load(conn, clock.now(), timedelta(hours=48, days=1))
    assert floor == oldest + 50_000 - 1
    with db.session() as s:
        batch = d._events.fetch(s)
    assert batch and all(e.id > floor for e in batch)
    d._events.handled(e.id for e in batch)
    assert d._events.waiting == []


def test_a_start_on_no_events_whose_ids_go_on_high_handles_every_later_edit(
    hearth: Hearth, db: Database, clock: FakeClock
) -> None:
    """No watermark and no event at all when the daemon starts (every event pruned, a restored
    database) while the ids go on far above 1. The ids below the first new event are no
    transactions still open. Before, each was a gap: past 65,535 of them the next poll's query
    could not be sent at all, and no event was handled again (found by `make simulate`)."""
    d = _daemon(hearth)
    d.catch_up()
    cid = couple_with_partners(db, clock.now())
    rid = add_ritual(db, clock.now(), cid, "five-minute-check-in")
    with db.begin() as conn:
        conn.execute(sa.update(Event).values(id=Event.id + 70_000))
        if not db.is_sqlite:
            conn.execute(sa.text("SELECT setval('event_id_seq', (SELECT max(id) FROM event))"))
    assert d.handle_events() > 0
    assert d._events.waiting == []

    with db.session() as s:
        rituals.edit(s, clock.now(), _ritual(s, rid), rituals.RitualSpec(at="22:00"))
    assert d.handle_events() == 1
    dues = _dues(db, rid)
    assert dues and all(due.hour == 21 for due in dues)  # 22:00 in Berlin
