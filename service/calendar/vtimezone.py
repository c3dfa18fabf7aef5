"""VTIMEZONE components generated from the tz database, one observance per transition.

Why not ``icalendar.Timezone.from_tzid``: it writes a DAYLIGHT observance's DTSTART in the
wall time *after* the change (03:00 for a 02:00 spring-forward), where RFC 5545 (3.6.5) says
the onset is a local time in TZOFFSETFROM. Parsers that follow the RFC (ical.js) then place
the change an hour late and misread times near it. Here every onset is the instant of the
change written in the offset in force just before it, and each transition is its own
observance (no RRULE to go stale when a government changes its rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from icalendar import Timezone, TimezoneDaylight, TimezoneStandard

from service.core.timeutil import UTC

# Coarse enough to be cheap, fine enough that no zone changes twice within one step.
_STEP = timedelta(hours=6)


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
    """Every change of offset, DST flag or abbreviation in [start, end), in order."""
    tz = ZoneInfo(tzid)
    out: list[Transition] = []
    lo, state = start, _state(tz, start)
    while lo < end:
        hi = min(lo + _STEP, end)
        new = _state(tz, hi)
        if new != state:
            a, b = lo, hi  # the change is in (a, b]: bisect to the second
            while b - a > timedelta(seconds=1):
                mid = a + (b - a) // 2
                if _state(tz, mid) == state:
                    a = mid
                else:
                    b = mid
            out.append(Transition(b, state[0], new[0], new[2], new[1]))
            state = new
        lo = hi
    return out


@lru_cache(maxsize=256)
def vtimezone(tzid: str, first: date, last: date) -> Timezone:
    """A VTIMEZONE for ``tzid`` correct from ``first`` to ``last`` (inclusive)."""
    tz = ZoneInfo(tzid)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    comp = Timezone()
    comp.add("tzid", tzid)
    offset, dst, name = _state(tz, start)
    # The observance in force at the start of the range, so every covered time resolves.
    comp.add_component(_observance(start + offset, offset, offset, name, dst))
    for t in transitions(tzid, start, end):
        comp.add_component(_observance(t.at + t.before, t.before, t.after, t.name, t.dst))
    return comp


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
