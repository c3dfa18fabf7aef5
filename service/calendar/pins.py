"""Which occurrences a feed pins with an override of exact instants.

Readers agree on an occurrence of the master event only when its instants follow from wall
times that name one instant each, by wall-clock arithmetic that no DST change interrupts.
They disagree otherwise: RFC 5545 and Python read a skipped 02:30 with the offset before the
gap and a repeated 01:45 as the first one, ical.js uses the offset after the change for both;
ical.js adds DURATION (and an alarm's TRIGGER) on the wall clock, so a 45-minute event
across a gap ends before it starts. An occurrence is pinned when any of its instants is
exposed to one of these readings: its start's wall time is skipped or repeated, a change
falls between its start and its end, its end's wall time is repeated, or (with alarms) one
of its reminders is reached through a wall time a change skips or repeats, or across a
change within the exact (hours and minutes) part of its offset. The whole-day part of an
offset is nominal days on the wall clock (:func:`service.domain.recurrence.reminder_due`),
which every reader computes alike from a clear wall time.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from service.calendar.vtimezone import transitions
from service.core.timeutil import UTC, localize
from service.domain.recurrence import Schedule, _local_starts, series_until

_DAY = timedelta(days=1)


@lru_cache(maxsize=256)
def changes(tzid: str, first: date, last: date) -> tuple[datetime, ...]:
    """The UTC instants in the range at which the zone's offset changes."""
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    end = datetime(last.year, last.month, last.day, tzinfo=UTC) + _DAY
    return tuple(t.at for t in transitions(tzid, start, end) if t.after != t.before)


def unclear(wall: datetime, tz: ZoneInfo) -> bool:
    """Whether a naive wall time is skipped or repeated (its two readings differ)."""
    first, second = wall.replace(tzinfo=tz, fold=0), wall.replace(tzinfo=tz, fold=1)
    return first.utcoffset() != second.utcoffset()


def _crossed(at: Sequence[datetime], lo: datetime, hi: datetime) -> bool:
    """Whether a change falls in (lo, hi]."""
    i = bisect_right(at, lo)
    return i < len(at) and at[i] <= hi


def exposed(s: Schedule, wall: datetime, offsets: Sequence[int], at: Sequence[datetime]) -> bool:
    """Whether the occurrence at naive local ``wall`` needs a pin (see the module doc)."""
    tz = ZoneInfo(s.timezone)
    if unclear(wall, tz):
        return True
    start = localize(wall.date(), wall.time(), tz)
    end = start + s.duration
    if _crossed(at, start, end) or unclear(end.astimezone(tz).replace(tzinfo=None), tz):
        return True
    for offset in offsets:
        days, minutes = divmod(offset, 24 * 60)
        shifted = wall - timedelta(days=days)
        if unclear(shifted, tz):
            return True
        mid = localize(shifted.date(), shifted.time(), tz)
        due = mid - timedelta(minutes=minutes)
        if _crossed(at, due, mid) or unclear(due.astimezone(tz).replace(tzinfo=None), tz):
            return True
    return False


def pinned(s: Schedule, first: date, last: date, offsets: Sequence[int]) -> list[datetime]:
    """The instants of the occurrences to pin between ``first`` and ``last``."""
    tz = ZoneInfo(s.timezone)
    wall = s.start_time or time(0)
    at = changes(s.timezone, first, last)
    # Only occurrences near a change can be exposed: from a day before it, less the
    # duration, to two days after it, plus the longest offset. Every instance sits at the
    # ritual's wall time, so checking those few wall times against one walk of the rule
    # keeps this linear in the span (asking the rule about each change would walk it from
    # DTSTART again every time).
    before = s.duration + _DAY
    after = timedelta(minutes=max(offsets, default=0)) + 2 * _DAY
    candidates = set()
    for change in at:
        day = (change - before).astimezone(tz).date()
        stop = (change + after).astimezone(tz).date()
        while day <= stop:
            local = datetime.combine(day, wall)
            if exposed(s, local, offsets, at):
                candidates.add(local)
            day += _DAY
    if not candidates:
        return []
    limit = series_until(s)
    out = []
    for local in _local_starts(s, min(candidates), max(candidates)):
        if local in candidates:
            instant = localize(local.date(), local.time(), tz)
            if limit is None or instant <= limit:
                out.append(instant)
    return out
