"""VTIMEZONE components generated from the tz database: one observance per transition over
the feed's range, then the zone's current rule as recurring observances.

Why not ``icalendar.Timezone.from_tzid``: it writes a DAYLIGHT observance's DTSTART in the
wall time *after* the change (03:00 for a 02:00 spring-forward), where RFC 5545 (3.6.5) says
the onset is a local time in TZOFFSETFROM. Parsers that follow the RFC (ical.js) then place
the change an hour late and misread times near it. Here every onset is the instant of the
change written in the offset in force just before it, and each transition is its own
observance while the range lasts (exact history, whatever rules a government had). Past it,
the TZif footer's rule recurs (:mod:`service.calendar.tzrule`): a client keeps a subscribed
feed for years, and one whose last observance had run out would keep that offset for good.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from icalendar import Timezone, TimezoneDaylight, TimezoneStandard, vRecur

from service.calendar import tzrule
from service.core.timeutil import UTC

# Coarse enough to be cheap, fine enough that no zone changes twice within one step.
_STEP = timedelta(hours=6)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# How far the changes of a zone whose rule has no RRULE form are listed.
_UNRULED_END = datetime(2100, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Transition:
    at: datetime  # UTC instant of the change
    before: timedelta
    after: timedelta
    name: str
    dst: bool


def _state(tz: ZoneInfo, instant: datetime) -> tuple[timedelta, bool, str]:
    local = instant.astimezone(tz)
    return local.utcoffset() or timedelta(0), bool(local.dst()), local.tzname() or ""


def transitions(tzid: str, start: datetime, end: datetime) -> list[Transition]:
    """Every change of offset, DST flag or abbreviation in [start, end), in order, each at
    the whole second it takes effect (the tz database counts in seconds; an instant with a
    fraction would put pin windows and onsets beside the change, not on it)."""
    tz = ZoneInfo(tzid)
    out: list[Transition] = []
    step = int(_STEP.total_seconds())
    lo, last = _epoch(start), _epoch(end)
    state = _state(tz, _at(lo))
    while lo < last:
        hi = min(lo + step, last)
        new = _state(tz, _at(hi))
        if new != state:
            a, b = lo, hi  # the change is in (a, b]: bisect on whole seconds
            while b - a > 1:
                mid = (a + b) // 2
                if _state(tz, _at(mid)) == state:
                    a = mid
                else:
                    b = mid
            out.append(Transition(_at(b), state[0], new[0], new[2], new[1]))
            state = new
        lo = hi
    return out


def _epoch(instant: datetime) -> int:
    return int((instant - _EPOCH).total_seconds())


def _at(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


@lru_cache(maxsize=256)
def vtimezone(tzid: str, first: date, last: date) -> Timezone:
    """A VTIMEZONE for ``tzid``: exact from ``first`` to ``last`` (inclusive), and after
    that the zone's current rule as recurring observances, so it never runs out."""
    tz = ZoneInfo(tzid)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    info = tzrule.read(tzid)
    rule = info.rule
    recurring = rule is not None and all(c.rrule() for c in rule.changes)
    if info.last_listed is not None and info.last_listed >= end:
        # The file lists changes past the range (Morocco's, tied to Ramadan, run to 2087):
        # only after the last of them is the footer the rule.
        end = info.last_listed + timedelta(seconds=1)
    if not recurring:
        end = max(end, _UNRULED_END)  # no rule RFC 5545 can say: list the changes far ahead
    comp = Timezone()
    comp.add("tzid", tzid)
    offset, dst, name = _state(tz, start)
    # The observance in force at the start of the range, so every covered time resolves.
    comp.add_component(_observance(start + offset, offset, offset, name, dst))
    for t in transitions(tzid, start, end):
        comp.add_component(_observance(t.at + t.before, t.before, t.after, t.name, t.dst))
    if recurring and rule is not None:
        for change in rule.changes:
            comp.add_component(_recurring(change, end))
    return comp


def _recurring(change: tzrule.Change, after: datetime) -> TimezoneDaylight | TimezoneStandard:
    """The change as an RRULE observance whose DTSTART is its first onset at or after
    ``after`` (the end of the listed transitions)."""
    year = after.year - 1
    while (onset := change.onset(year)) - change.before < after.replace(tzinfo=None):
        year += 1
    obs = _observance(onset, change.before, change.after, change.name, change.dst)
    obs.add("rrule", vRecur.from_ical(change.rrule() or ""))
    return obs


def _observance(
    onset: datetime, before: timedelta, after: timedelta, name: str, dst: bool
) -> TimezoneDaylight | TimezoneStandard:
    obs = TimezoneDaylight() if dst else TimezoneStandard()
    obs.add("dtstart", onset.replace(tzinfo=None))
    obs.add("tzoffsetfrom", before)
    obs.add("tzoffsetto", after)
    if name:
        obs.add("tzname", name)
    return obs
