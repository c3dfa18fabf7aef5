"""Streaks and completion rates on a known history, through ``hearth couple stats``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from service.core.clock import FakeClock
from service.core.config import load_settings
from service.core.exceptions import ConfigError
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import CheckIn, ConsentState, Ritual
from service.domain import partners, skips
from tests.conftest import Cli, make_settings
from tests.factories import add_ritual, couple_with_partners


def _day(d: int) -> datetime:
    return datetime(2026, 1, d, 20, tzinfo=UTC)  # 21:00 in Berlin


def test_stats_on_a_known_history(db: Database, clock: FakeClock, run: Cli) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    rid = add_ritual(db, now, cid, "five-minute-check-in")  # daily 21:00 Europe/Berlin
    with db.session() as s:
        r = s.get(Ritual, rid)
        assert r is not None
        skips.skip(s, now, r, _day(12))
        alice, sam = partners.resolve(s, "Alice"), partners.resolve(s, "Sam")
        # DONE comes by text: Sam (email-only in the factory) gets a phone to report with.
        sam.phone = "+12125550123"
        partners.set_consent(s, now, sam, ConsentState.CONSENTED, "test")
        late = _day(11) + timedelta(minutes=5)  # after the next occurrence began
        history = {
            5: (alice, sam),
            6: (alice, sam),
            7: (alice, sam),
            8: (alice, sam),  # kept x4
            9: (alice,),  # only one partner: missed
            10: (alice, sam),  # but Sam's DONE came late: missed
            11: (alice, sam),
            13: (alice, sam),  # kept (12 was skipped)
        }
        for day, who in history.items():
            for p in who:
                at = late if (day, p) == (10, sam) else _day(day) + timedelta(minutes=30)
                s.add(CheckIn(ritual_id=rid, occurrence_start=_day(day), partner_id=p.id, at=at))
    clock.set(datetime(2026, 1, 15, 12, tzinfo=UTC))  # the 14th is still open: not counted

    out = json.loads(run.ok("couple", "stats", "Alice & Sam", "--json").output)
    assert out == [
        {
            "ritual_id": rid,
            "title": "Five-minute check-in",
            "last_4_weeks": {"done": 6, "counted": 8, "percent": 75.0},
            "last_12_weeks": {"done": 6, "counted": 8, "percent": 75.0},
            "current_streak": 2,
            "best_streak": 4,
            "mood": {"Alice": [], "Sam": []},
        }
    ]
    table = run.ok("couple", "stats", "Alice & Sam").output
    assert "75% (6/8)" in table and "Five-minute check-in" in table

    # A missed 14th ends the streak once its grace period is over; four weeks later only
    # the recent misses count in the 4-week rate.
    clock.set(datetime(2026, 2, 20, 12, tzinfo=UTC))
    (row,) = json.loads(run.ok("couple", "stats", str(cid), "--json").output)
    assert row["current_streak"] == 0 and row["best_streak"] == 4
    # 23 Jan .. 18 Feb; the 19th is open until the 20th 21:00
    assert row["last_4_weeks"] == {"done": 0, "counted": 27, "percent": 0.0}
    assert row["last_12_weeks"]["done"] == 6


def test_stats_refuses_an_unknown_couple(run: Cli) -> None:
    result = run("couple", "stats", "Nobody")
    assert result.exit_code == 2 and "Nobody" in result.output


def test_a_partner_who_cannot_text_does_not_hold_the_couple_back(
    db: Database, clock: FakeClock, run: Cli
) -> None:
    """Sam has email only, so he can never text DONE: Alice's reports alone decide."""
    now = clock.now()
    cid = couple_with_partners(db, now)
    rid = add_ritual(db, now, cid, "five-minute-check-in")
    with db.session() as s:
        alice = partners.resolve(s, "Alice")
        for d in (5, 6):
            at = _day(d) + timedelta(minutes=10)
            s.add(CheckIn(ritual_id=rid, occurrence_start=_day(d), partner_id=alice.id, at=at))
    clock.set(datetime(2026, 1, 9, 12, tzinfo=UTC))  # the 7th was missed; the 8th is open
    (row,) = json.loads(run.ok("couple", "stats", str(cid), "--json").output)
    assert row["last_4_weeks"] == {"done": 2, "counted": 3, "percent": 66.7}
    assert (row["current_streak"], row["best_streak"]) == (0, 2)


def test_a_pause_that_ended_still_excuses_its_occurrences(
    db: Database, clock: FakeClock, run: Cli
) -> None:
    """Occurrences inside a past pause are neither kept nor missed after the resume."""
    now = clock.now()
    cid = couple_with_partners(db, now)
    rid = add_ritual(db, now, cid, "five-minute-check-in")
    with db.session() as s:
        alice = partners.resolve(s, "Alice")
        for d in (5, 6, 10):
            at = _day(d) + timedelta(minutes=10)
            s.add(CheckIn(ritual_id=rid, occurrence_start=_day(d), partner_id=alice.id, at=at))
    clock.set(datetime(2026, 1, 6, 22, tzinfo=UTC))
    run.ok("ritual", "pause", str(rid))
    clock.set(datetime(2026, 1, 9, 12, tzinfo=UTC))  # the 7th and 8th fell in the pause
    run.ok("ritual", "resume", str(rid))
    clock.set(datetime(2026, 1, 11, 12, tzinfo=UTC))  # the 9th was missed, the 10th kept
    (row,) = json.loads(run.ok("couple", "stats", str(cid), "--json").output)
    assert row["last_4_weeks"] == {"done": 3, "counted": 4, "percent": 75.0}
    assert (row["current_streak"], row["best_streak"]) == (1, 2)


def test_a_stop_today_does_not_rewrite_last_week(db: Database, clock: FakeClock, run: Cli) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    rid = add_ritual(db, now, cid, "five-minute-check-in")
    with db.session() as s:
        alice = partners.resolve(s, "Alice")
        for d in (5, 6, 8):
            at = _day(d) + timedelta(minutes=10)
            s.add(CheckIn(ritual_id=rid, occurrence_start=_day(d), partner_id=alice.id, at=at))
    clock.set(datetime(2026, 1, 10, 12, tzinfo=UTC))  # 5, 6, 8 kept; 7 missed; 9 still open
    before = json.loads(run.ok("couple", "stats", str(cid), "--json").output)
    assert before[0]["last_4_weeks"] == {"done": 3, "counted": 4, "percent": 75.0}
    with db.session() as s:
        partners.set_consent(
            s, clock.now(), partners.resolve(s, "Alice"), ConsentState.OPTED_OUT, "sms STOP"
        )
    assert json.loads(run.ok("couple", "stats", str(cid), "--json").output) == before


def test_a_grace_period_set_in_hours_ends_before_the_next_occurrence(
    db: Database, clock: FakeClock, run: Cli
) -> None:
    """With replies.grace_hours = 1, a DONE two hours after the check-in comes too late,
    though the next check-in is a day away; by default it would count."""
    now = clock.now()
    cid = couple_with_partners(db, now)
    rid = add_ritual(db, now, cid, "five-minute-check-in")
    with db.session() as s:
        alice, sam = partners.resolve(s, "Alice"), partners.resolve(s, "Sam")
        sam.phone = "+12125550123"
        partners.set_consent(s, now, sam, ConsentState.CONSENTED, "test")
        for day, late in ((5, timedelta(minutes=30)), (6, timedelta(hours=2))):
            for p in (alice, sam):
                at = _day(day) + (late if p is sam else timedelta(minutes=10))
                s.add(CheckIn(ritual_id=rid, occurrence_start=_day(day), partner_id=p.id, at=at))
    clock.set(datetime(2026, 1, 7, 12, tzinfo=UTC))  # before the 7th's check-in
    strict = Cli(
        Hearth(
            settings=make_settings(db, replies={"grace_hours": 1, "chase_hours": 0.5}),
            db=db,
            clock=clock,
        )
    )
    (row,) = json.loads(strict.ok("couple", "stats", str(cid), "--json").output)
    assert row["last_4_weeks"] == {"done": 1, "counted": 2, "percent": 50.0}
    (row,) = json.loads(run.ok("couple", "stats", str(cid), "--json").output)
    assert row["last_4_weeks"] == {"done": 2, "counted": 2, "percent": 100.0}
    # A grace period longer than the gap to the next check-in ends at that check-in.
    with db.session() as s:
        s.add(
            CheckIn(
                ritual_id=rid,
                occurrence_start=_day(7),
                partner_id=alice.id,
                at=_day(7) + timedelta(minutes=5),
            )
        )
        s.add(
            CheckIn(
                ritual_id=rid,
                occurrence_start=_day(7),
                partner_id=sam.id,
                at=_day(8) + timedelta(hours=1),
            )
        )
    clock.set(datetime(2026, 1, 10, 12, tzinfo=UTC))
    long = Cli(Hearth(settings=make_settings(db, replies={"grace_hours": 48}), db=db, clock=clock))
    (row,) = json.loads(long.ok("couple", "stats", str(cid), "--json").output)
    # 5 and 6 kept; 7 late (after the 8th began); 8 missed; 9 open until the 10th's
    assert row["last_4_weeks"] == {"done": 2, "counted": 4, "percent": 50.0}


def test_a_chase_must_fit_inside_the_grace_period(run: Cli) -> None:
    with pytest.raises(ConfigError, match="grace_hours must be more than chase_hours"):
        load_settings(None, environ={"HEARTH_REPLIES_GRACE_HOURS": "2"})
    assert load_settings(None, environ={"HEARTH_REPLIES_GRACE_HOURS": "4"}).replies.grace
