"""Pure recurrence: a ritual's schedule and a window -> occurrence instants in UTC.

RFC 5545 semantics: the RRULE is expanded in the ritual's local wall time from DTSTART, then
each local time is placed on the timeline with the DST rules of :func:`localize` (a time
in a spring-forward gap moves forward by the gap, an ambiguous one takes the first instant).
Skips remove an occurrence, moves replace it. Nothing here touches the database or the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

from dateutil.rrule import rrule, rrulestr

from service.core.timeutil import UTC, localize, zone
from service.db.states import ExceptionKind

if TYPE_CHECKING:
    from service.db.models import Ritual

ALL_DAY_NUDGE_TIME = time(9, 0)  # when an all-day ritual's "offset 0" nudge goes out, local


@dataclass(frozen=True)
class Schedule:
    dtstart_date: date
    start_time: time | None  # None: all-day
    duration: timedelta
    timezone: str
    rrule: str | None = None  # None: a single occurrence on dtstart_date
    skips: frozenset[datetime] = frozenset()  # original starts (UTC)
    moves: Mapping[datetime, datetime] = field(default_factory=dict)  # original -> new (UTC)
    ends_at: datetime | None = None  # no occurrence starts after this (removed ritual)

    @property
    def all_day(self) -> bool:
        return self.start_time is None


@dataclass(frozen=True, order=True)
class Occurrence:
    start: datetime  # UTC, after any move
    end: datetime
    original_start: datetime  # the recurrence instance it came from (RECURRENCE-ID)

    @property
    def moved(self) -> bool:
        return self.start != self.original_start


def split_until(rule: str) -> tuple[str, str | None]:
    """Remove UNTIL from an RRULE; dateutil insists UNTIL and DTSTART agree on awareness,
    and we apply the cut-off ourselves in UTC instead."""
    parts = [p for p in rule.strip().removeprefix("RRULE:").split(";") if p]
    until = None
    kept = []
    for part in parts:
        key, _, value = part.partition("=")
        if key.upper() == "UNTIL":
            until = value
        else:
            kept.append(part)
    return ";".join(kept), until


def until_instant(value: str, tz_name: str) -> datetime:
    """UNTIL as an aware UTC instant: ``...Z`` is UTC, a bare date-time is local, a date means
    the end of that local day."""
    tz = zone(tz_name)
    if value.endswith("Z"):
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if "T" in value:
        naive = datetime.strptime(value, "%Y%m%dT%H%M%S")
        return localize(naive.date(), naive.time(), tz)
    day = datetime.strptime(value, "%Y%m%d").date()
    return localize(day + timedelta(days=1), time(0), tz) - timedelta(seconds=1)


@lru_cache(maxsize=4096)
def _rule(rule: str, dtstart: datetime) -> rrule:
    parsed = rrulestr(rule, dtstart=dtstart, cache=False)
    assert isinstance(parsed, rrule)
    return parsed


def _local_starts(s: Schedule, lo_local: datetime, hi_local: datetime) -> Iterable[datetime]:
    wall = s.start_time or time(0)
    dtstart = datetime.combine(s.dtstart_date, wall)
    if not s.rrule:
        if lo_local <= dtstart <= hi_local:
            yield dtstart
        return
    rule, _ = split_until(s.rrule)
    yield from _rule(rule, dtstart).between(lo_local, hi_local, inc=True)


def first_local_start(s: Schedule) -> datetime | None:
    """The rule's first instance as a naive local time (None if the rule yields nothing)."""
    wall = s.start_time or time(0)
    dtstart = datetime.combine(s.dtstart_date, wall)
    if not s.rrule:
        return dtstart
    rule, _ = split_until(s.rrule)
    first: datetime | None = _rule(rule, dtstart).after(dtstart, inc=True)
    return first


def series_until(s: Schedule) -> datetime | None:
    """The last instant an occurrence may start: the earlier of the rule's UNTIL and the end."""
    limits = [s.ends_at] if s.ends_at else []
    if s.rrule:
        _, until = split_until(s.rrule)
        if until:
            limits.append(until_instant(until, s.timezone))
    return min(limits) if limits else None


def original_starts(s: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Instants (UTC) the rule generates in [start, end), before skips and moves."""
    tz = zone(s.timezone)
    # Pad the local window by more than any UTC offset or DST gap, then filter exactly.
    pad = timedelta(days=2)
    lo_local = start.astimezone(tz).replace(tzinfo=None) - pad
    hi_local = end.astimezone(tz).replace(tzinfo=None) + pad
    limit = series_until(s)
    out: list[datetime] = []
    for local in _local_starts(s, lo_local, hi_local):
        instant = localize(local.date(), local.time(), tz)
        # A transition that skips a whole day (Pacific/Apia, 2011-12-30) moves that day's
        # instance onto the next day's: one instant, one occurrence.
        if (
            start <= instant < end
            and (limit is None or instant <= limit)
            and instant not in out[-1:]
        ):
            out.append(instant)
    return out


def occurrences(s: Schedule, start: datetime, end: datetime) -> list[Occurrence]:
    """Occurrences whose (possibly moved) start lies in [start, end), sorted by start."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("window bounds must be aware datetimes")
    tz = zone(s.timezone)
    result: list[Occurrence] = []
    for original in original_starts(s, start, end):
        if original in s.skips or original in s.moves:
            continue
        result.append(Occurrence(original, _end(s, original, tz), original))
    for original, new in s.moves.items():
        if not moved_within(s, original, new):
            continue
        if start <= new < end and original not in s.skips:
            result.append(Occurrence(new, _end(s, new, tz), original))
    result.sort()
    return result


def moved_within(s: Schedule, original: datetime, new: datetime) -> bool:
    """Whether a move still yields an occurrence: its original must be one of the series'
    instances (up to UNTIL), and it must not start after the ritual was removed. An override
    may start after UNTIL (RFC 5545), so moving the last instance later keeps it."""
    limit = series_until(s)
    return (limit is None or original <= limit) and (s.ends_at is None or new <= s.ends_at)


def is_occurrence(s: Schedule, instant: datetime) -> bool:
    """True when the rule generates exactly this instant (for validating skips and moves)."""
    return instant in original_starts(s, instant, instant + timedelta(seconds=1))


def _end(s: Schedule, start: datetime, tz: object) -> datetime:
    if not s.all_day:
        return start + s.duration
    # All-day: the event covers local calendar days, whatever their length in hours.
    local_day = start.astimezone(zone(s.timezone)).date()
    days = max(1, s.duration // timedelta(days=1))
    return localize(local_day + timedelta(days=days), time(0), zone(s.timezone))


def nudge_anchor(s: Schedule, occurrence_start: datetime) -> datetime:
    """The instant reminder offsets count back from: the start, or 09:00 local for all-day."""
    if not s.all_day:
        return occurrence_start
    tz = zone(s.timezone)
    return localize(occurrence_start.astimezone(tz).date(), ALL_DAY_NUDGE_TIME, tz)


def reminder_due(s: Schedule, occurrence_start: datetime, offset_minutes: int) -> datetime:
    """When the reminder ``offset_minutes`` before an occurrence goes out.

    Whole days are nominal days on the ritual's wall clock, as a VALARM's ``-P1D`` means (RFC
    5545 3.3.6): "1 day before" a 21:00 ritual is 21:00 the evening before, an hour more or
    less than 1,440 minutes across a DST change. A wall time the day-shift lands in a gap or
    on a repeated hour is placed like any other (:func:`localize`). The rest of the offset
    (hours, minutes) is exact time before that.
    """
    anchor = nudge_anchor(s, occurrence_start)
    days, minutes = divmod(offset_minutes, 24 * 60)
    if days:
        tz = zone(s.timezone)
        wall = anchor.astimezone(tz).replace(tzinfo=None) - timedelta(days=days)
        anchor = localize(wall.date(), wall.time(), tz)
    return anchor - timedelta(minutes=minutes)


def schedule_of(ritual: Ritual) -> Schedule:
    """The schedule a stored ritual describes, its skips and moves included."""
    skips = frozenset(e.original_start for e in ritual.exceptions if e.kind is ExceptionKind.SKIP)
    moves = {
        e.original_start: e.new_start
        for e in ritual.exceptions
        if e.kind is ExceptionKind.MOVE and e.new_start is not None
    }
    return Schedule(
        dtstart_date=ritual.dtstart_date,
        start_time=ritual.start_time,
        duration=timedelta(minutes=ritual.duration_minutes),
        timezone=ritual.timezone,
        rrule=ritual.rrule,
        skips=skips,
        moves=moves,
        ends_at=ritual.ended_at,
    )
