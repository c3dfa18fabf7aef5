"""Load leveling: each nudge's send slot (service/outbox/leveling.py), on SQLite and
PostgreSQL, and what partners then receive at the Twilio stand-in."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from service.channels import build
from service.core.clock import FakeClock
from service.core.config import Settings
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Partner, Reminder, ReminderState, Ritual
from service.domain import couples, partners, rituals
from service.outbox import leveling, planner
from service.outbox.dispatcher import Dispatcher
from tests import peers
from tests.conftest import make_settings
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn

H48 = timedelta(hours=48)
TONIGHT = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)  # 21:00 in Berlin
LANGS = ("en", "de", "es")


def _population(
    db: Database,
    now: datetime,
    n: int,
    quiet: str | None = None,
    template: str = "five-minute-check-in",
    **spec: str,
) -> list[int]:
    """``n`` couples of one SMS partner each (languages in turn), each with a nightly
    ritual at 21:00 Berlin."""
    ids = []
    with db.session() as s:
        for i in range(n):
            c = couples.add(s, now, name=f"Couple {i}", timezone="Europe/Berlin")
            partners.add(
                s,
                now,
                c,
                name=f"P{i}",
                phone=f"+1212555{i:04d}",
                email=None,
                timezone=None,
                channels="sms",
                quiet_hours=quiet,
                sms_consent="signup form",
                language=LANGS[i % 3],
            )
            rituals.add(s, now, c, rituals.RitualSpec(**spec), template=template)
            ids.append(c.id)
    planner.plan(db.write_engine, now, H48, 30)
    return ids


def _slow(db: Database, rate: float = 0.1) -> Settings:
    """A sender pool of one number at ``rate`` segments a second (0.1: 12 in two minutes)."""
    return make_settings(db, twilio={"sender_rate_per_second": rate})


def _level(db: Database, now: datetime, settings: Settings) -> int:
    with db.write_engine.begin() as conn:
        return leveling.level(conn, now, settings, H48)


def _slots(db: Database) -> dict[tuple[int, datetime, int], datetime]:
    with db.session() as s:
        rows = s.execute(
            sa.select(
                Reminder.partner_id,
                Reminder.occurrence_start,
                Reminder.offset_minutes,
                Reminder.next_attempt_at,
            ).where(Reminder.state == ReminderState.SCHEDULED)
        )
        return {(r[0], r[1], r[2]): r[3] for r in rows}


def _tonight(slots: dict[tuple[int, datetime, int], datetime]) -> list[datetime]:
    return sorted(v for k, v in slots.items() if k[1] == TONIGHT)


def test_a_busy_minute_is_spread_back_over_its_window_at_the_pools_rate(
    db: Database, clock: FakeClock
) -> None:
    now = clock.now()
    _population(db, now, 15, remind="0")
    settings = _slow(db)
    _level(db, now, settings)
    tonight = _tonight(_slots(db))
    # 12 fit the two minutes before 21:00 at one every 10 s, latest first; the 3 beyond
    # the window keep its start and queue (they will be 10, 20, 30 s late: the forecast's
    # figure too).
    on_time = [TONIGHT - timedelta(seconds=10 * k) for k in range(12)]
    assert tonight == sorted([TONIGHT - timedelta(minutes=2)] * 3 + on_time)
    assert min(tonight) >= TONIGHT - timedelta(minutes=2)  # the at-start window, no more


def test_slots_are_the_same_whichever_worker_computes_them(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    _population(db, now, 20, remind="0,60")
    settings = _slow(db)
    _level(db, now, settings)
    first = _slots(db)
    assert len(set(_tonight(first))) > 10  # something was spread

    # Two workers (engines of their own) level the same outbox at once, from scratch.
    with db.session() as s:
        s.execute(sa.update(Reminder).values(next_attempt_at=Reminder.due_at))
    workers = [Database(db.url), Database(db.url)]
    errors: list[BaseException] = []

    def run(w: Database) -> None:
        try:
            with w.write_engine.begin() as conn:
                leveling.level(conn, now, settings, H48)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in workers:
        w.dispose()
    assert not errors
    assert _slots(db) == first
    assert _level(db, now, settings) == 0  # a pass over settled slots moves nothing


def test_a_replan_moves_the_slots(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    ids = _population(db, now, 15, remind="0")
    settings = _slow(db)
    _level(db, now, settings)
    before = _slots(db)
    with db.session() as s:
        moved = s.scalars(sa.select(Ritual).where(Ritual.couple_id == ids[0])).one()
        rituals.edit(s, now, moved, rituals.RitualSpec(at="21:30"))
        pid = s.scalars(sa.select(Partner.id).where(Partner.couple_id == ids[0])).one()
    with db.write_engine.begin() as conn:
        planner.replan(conn, now, ids[0], H48, 30)
        # As the daemon does after a replan: only the stretches near that couple's nudges.
        assert leveling.level(conn, now, settings, H48, couple_ids=[ids[0]]) > 0
    after = _slots(db)
    assert _level(db, now, settings) == 0  # the next full pass agrees
    later = TONIGHT + timedelta(minutes=30)
    # The moved couple's nudge now has a slot of its own at 21:30 (nothing else is due then)...
    assert after[pid, later, 0] == later
    # ...and 21:00 has one fewer: 12 on time and 2 queued, not 3.
    assert _tonight(after).count(TONIGHT - timedelta(minutes=2)) == 2
    assert _tonight(after) != _tonight(before)


def test_an_early_text_names_the_real_time_in_every_language(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    now = clock.now()
    _population(db, now, 12, remind="0")
    _level(db, now, _slow(db))
    settings = make_settings(db, **peers.sections(twilio_standin, smtp_sink))
    d = Dispatcher(
        Hearth(settings=settings, db=db, clock=clock), build(settings), rng=random.Random(2)
    )
    clock.set(TONIGHT - timedelta(minutes=2))
    while clock.now() < TONIGHT:  # every 10 s, as the slots fall
        d.run_once()
        clock.advance(timedelta(seconds=10))
    texts = {m.to: m.body or "" for m in twilio_standin.sent}
    assert len(texts) == 11  # all but the one whose slot is 21:00 itself, all before 21:00
    with db.session() as s:
        sent = s.execute(
            sa.select(Partner.phone, Partner.language, Reminder.sent_at, Reminder.due_at)
            .join(Partner, Partner.id == Reminder.partner_id)
            .where(Reminder.state == ReminderState.SENT)
        ).all()
    assert len(sent) == 11 and all(r.sent_at < r.due_at for r in sent)
    named = {"en": "at 9:00 PM", "de": "um 21:00", "es": "a las 21:00"}
    relative = ("min", "Min.", "started", "begonnen", "desde")
    for phone, language, _sent, _due in sent:
        body = texts[phone]
        assert named[language] in body, body
        assert not any(word in body for word in relative), body


def test_quiet_hours_and_stop_hold_for_early_slots(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """Quiet hours until 08:00 and gratitude at 08:00: no slot before 08:00, however busy;
    a partner who replied STOP gets nothing, even from a slot given before."""
    now = clock.now()
    ids = _population(
        db, now, 12, quiet="22:00-08:00", template="gratitude-three", at="08:00", remind="0"
    )
    _level(db, now, _slow(db))
    morning = datetime(2026, 1, 6, 7, 0, tzinfo=UTC)  # 08:00 Berlin
    slots = [v for k, v in _slots(db).items() if k[1] == morning]
    assert len(slots) == 12 and min(slots) == morning  # they queue from 08:00: none earlier
    with db.session() as s:
        stopped = s.scalars(sa.select(Partner).where(Partner.couple_id == ids[1])).one()
        stopped_phone = stopped.phone
        assert stopped_phone is not None
        partners.opt_out_sms(s, now, stopped_phone, "STOP")
    settings = make_settings(db, **peers.sections(twilio_standin, smtp_sink))
    d = Dispatcher(
        Hearth(settings=settings, db=db, clock=clock), build(settings), rng=random.Random(2)
    )
    clock.set(morning - timedelta(minutes=3))
    for _ in range(8):
        d.run_once()
        clock.advance(timedelta(minutes=1))
    got = [m.to for m in twilio_standin.sent]
    assert len(got) == 11 and stopped_phone not in got
    with db.session() as s:
        early = s.scalar(
            sa.select(sa.func.count()).select_from(Reminder).where(Reminder.sent_at < morning)
        )
    assert early == 0
