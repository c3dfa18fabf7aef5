"""VTIMEZONEs and the DST changes behind the feed's pins: whole-second instants, the exact
first and last second of every gap and fold, and a recurring tail that agrees with the tz
database for the rest of the century."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr
from icalendar import Component, vDDDTypes, vRecur, vUTCOffset

from service.calendar import pins, tzrule
from service.calendar.vtimezone import transitions, vtimezone
from service.core.clock import FakeClock
from service.core.timeutil import localize
from service.db.engine import Database
from tests.factories import add_ritual, couple_with_partners
from tests.interop import ZONES
from tests.test_feeds import _feed, _prop

SECOND = timedelta(seconds=1)
# Two more whose rule moves a change off the named day (RFC 8536 hours past 24 or below 0).
RULED = (*ZONES, "Asia/Jerusalem", "America/Nuuk")


@pytest.mark.parametrize("tz", ZONES)
def test_every_change_is_at_a_whole_second_and_bounds_its_gap_or_fold_exactly(tz: str) -> None:
    zone = ZoneInfo(tz)
    # A start with a fraction of a second must not leak into the instants found.
    found = transitions(
        tz, datetime(2026, 1, 1, 0, 0, 0, 439452, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)
    )
    for t in found:
        assert t.at.microsecond == 0, t
        assert (t.at - SECOND).astimezone(zone).utcoffset() == t.before
        assert t.at.astimezone(zone).utcoffset() == t.after
        jump = t.after - t.before
        if not jump:
            continue
        onset = (t.at + t.before).replace(tzinfo=None)  # the wall clock at the change, before
        if jump > timedelta(0):  # a gap: [onset, onset + jump) is skipped
            first, last = onset, onset + jump - SECOND
            assert localize(onset.date(), (onset - SECOND).time(), zone) == t.at - SECOND
            assert localize(onset.date(), (onset + jump).time(), zone) == t.at
        else:  # a fold: [onset + jump, onset) comes twice
            first, last = onset + jump, onset - SECOND
        assert pins.unclear(first, zone) and pins.unclear(last, zone), t
        assert not pins.unclear(first - SECOND, zone) and not pins.unclear(last + SECOND, zone)
    assert len(found) == {
        "Asia/Kathmandu": 0,
        "America/Sao_Paulo": 0,
        "Asia/Tehran": 0,
        "Pacific/Kiritimati": 0,
    }.get(tz, len(found))
    if tz in ("Europe/Berlin", "Australia/Lord_Howe", "Africa/Casablanca"):
        assert len(found) == 4


def test_a_ritual_at_the_exact_wall_time_of_a_change_is_pinned(
    db: Database, clock: FakeClock
) -> None:
    """Daily at 02:00 in Berlin, the first second of the spring gap and of the autumn fold:
    pinned on both days (ical.js read it an hour off). At 03:00, the first second after
    each, nothing is unclear: no pin on those days."""
    now = clock.now()
    cid = couple_with_partners(db, now)
    for at in ("02:00", "03:00"):
        add_ritual(db, now, cid, kind="custom", title=at, at=at, every="daily")
    text = _feed(db, cid, now).decode()
    blocks = [b for b in text.split("BEGIN:VEVENT") if "RECURRENCE-ID" in b]
    pinned = {
        (b.split("SUMMARY:")[1][:5], b.split("RECURRENCE-ID;TZID=Europe/Berlin:")[1][:15])
        for b in blocks
    }
    assert ("02:00", "20270328T020000") in pinned and ("02:00", "20271031T020000") in pinned
    assert not any(title == "03:00" for title, _ in pinned)
    assert "DTSTART;TZID=Europe/Berlin:20270328T030000\r\n" in text  # where the SMS goes
    assert "DTSTART:20271031T000000Z\r\n" in text  # the first 02:00, in UTC: no doubt


@pytest.mark.parametrize("tz", RULED)
def test_the_recurring_tail_agrees_with_the_tz_database_to_2100(tz: str) -> None:
    """After the listed changes (to 2046 for a feed built in 2026, to 2087 for Morocco's), the
    VTIMEZONE's RRULE observances, expanded by dateutil, give exactly the instants zoneinfo
    has, for every year to 2100."""
    comp = vtimezone(tz, date(2025, 1, 1), date(2046, 12, 31))
    recurring = [o for o in comp.subcomponents if "RRULE" in o]

    def onset(o: Component) -> datetime:
        value = _prop(o, "DTSTART", vDDDTypes).dt
        assert isinstance(value, datetime)
        return value

    last = max(onset(o) for o in comp.subcomponents if "RRULE" not in o).replace(tzinfo=UTC)
    end = datetime(2100, 1, 1, tzinfo=UTC)
    expected = [t.at for t in transitions(tz, last, end) if t.at > last + timedelta(days=1)]
    got = []
    for o in recurring:
        before = _prop(o, "TZOFFSETFROM", vUTCOffset).td
        rrule = rrulestr(_prop(o, "RRULE", vRecur).to_ical().decode(), dtstart=onset(o))
        until = end.replace(tzinfo=None) + timedelta(days=1)
        got += [(at - before).replace(tzinfo=UTC) for at in rrule.between(onset(o), until, True)]
    got = sorted(g for g in got if g < end)
    rule = tzrule.read(tz).rule
    assert rule is not None
    if rule.changes:
        assert len(recurring) == 2 and got == expected and len(got) > 80, tz
    else:  # no DST now: the last listed observance holds for good
        assert recurring == [] and expected == [], tz


def test_posix_rules_read_as_rrules() -> None:
    nuuk = tzrule.parse("<-02>2<-01>,M3.5.0/-1,M10.5.0/0")
    assert nuuk is not None
    start, end = nuuk.changes
    assert start.rrule() == "FREQ=YEARLY;BYMONTH=3;BYDAY=SA;BYMONTHDAY=-8,-7,-6,-5,-4,-3,-2"
    assert start.onset(2030) == datetime(2030, 3, 30, 23, 0)  # the Saturday before the last Sunday
    assert end.rrule() == "FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU" and end.at == timedelta(0)
    chatham = tzrule.parse("<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45")
    assert chatham is not None and chatham.offset == timedelta(hours=12, minutes=45)
    assert [c.onset(2027).time() for c in chatham.changes] == [time(2, 45), time(3, 45)]
    assert tzrule.parse("<+0545>-5:45") == tzrule.Rule(timedelta(hours=5, minutes=45), "+0545", ())
    assert tzrule.parse("nonsense,J60") is None
