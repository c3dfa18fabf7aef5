"""Small time helpers shared by the domain: zones, local wall time, quiet hours."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from email.utils import parsedate_to_datetime
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

__all__ = [
    "UTC",
    "before_quiet_hours",
    "exists",
    "http_date",
    "in_quiet_hours",
    "is_zone",
    "known_zones",
    "localize",
    "quiet_hours_end",
    "quiet_hours_start",
    "zone",
]


@cache
def known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def is_zone(name: str) -> bool:
    """Whether ``name`` is an IANA zone. Asked of the list, not of ZoneInfo, which opens
    whatever path it is given (``Europe`` is a tzdata folder: IsADirectoryError)."""
    return name in known_zones()


def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def localize(day: date, at: time, tz: ZoneInfo) -> datetime:
    """Local wall time -> aware UTC instant, with the RFC 5545 rules of DESIGN.md.

    A nonexistent time (spring forward) moves forward by the length of the gap; an ambiguous
    one (fall back) takes the first occurrence (fold=0).
    """
    # zoneinfo with fold=0 does exactly this: an ambiguous time takes the earlier offset, and a
    # time in a gap is read with the offset from before the transition, which lands it one
    # gap-length later on the wall clock.
    return datetime.combine(day, at, tzinfo=tz).replace(fold=0).astimezone(UTC)


def exists(day: date, at: time, tz: ZoneInfo) -> bool:
    """False for a local time skipped by a spring-forward transition."""
    naive = datetime.combine(day, at)
    return localize(day, at, tz).astimezone(tz).replace(tzinfo=None) == naive


def http_date(value: str) -> datetime | None:
    """An HTTP-date (RFC 9110) as an aware instant, or None if it is not one. Dates with no
    zone ("-0000", asctime) are UTC: every HTTP-date is."""
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def in_quiet_hours(instant: datetime, tz: ZoneInfo, start: time | None, end: time | None) -> bool:
    if start is None or end is None or start == end:
        return False
    local = instant.astimezone(tz).time().replace(tzinfo=None)
    if start < end:
        return start <= local < end
    return local >= start or local < end


def quiet_hours_end(instant: datetime, tz: ZoneInfo, start: time, end: time) -> datetime:
    """The first instant at or after ``instant`` that is outside the quiet hours."""
    if not in_quiet_hours(instant, tz, start, end):
        return instant
    day = instant.astimezone(tz).date()
    # The end is today or tomorrow in local terms: the first one after the instant. On a
    # fall-back night the end's wall time may come twice (fold=1 is the second); in a spring
    # gap, fold=1 reads it with the later offset, an earlier instant still inside the quiet
    # hours, which the check drops.
    candidates = (
        datetime.combine(day + timedelta(days=delta), end, tzinfo=tz)
        .replace(fold=fold)
        .astimezone(UTC)
        for delta in (0, 1, 2)
        for fold in (0, 1)
    )
    return min(c for c in candidates if c > instant and not in_quiet_hours(c, tz, start, end))


def quiet_hours_start(instant: datetime, tz: ZoneInfo, start: time, end: time) -> datetime:
    """When the quiet hours around ``instant`` began (``instant`` itself if it is outside)."""
    if not in_quiet_hours(instant, tz, start, end):
        return instant
    day = instant.astimezone(tz).date()
    candidates = (localize(day + timedelta(days=delta), start, tz) for delta in (-2, -1, 0))
    return max(c for c in candidates if c <= instant)


# The moment "just before" quiet hours: a minute ahead reads as 21:59 on a 22:00 night.
JUST_BEFORE = timedelta(minutes=1)


def before_quiet_hours(
    due: datetime, tz: ZoneInfo, start: time | None, end: time | None, early: timedelta
) -> datetime | None:
    """For a ``due`` inside the quiet hours: the last moment before they began, if that is
    at most ``early`` ahead of ``due``; else None (outside the quiet hours: None too)."""
    if start is None or end is None or not in_quiet_hours(due, tz, start, end):
        return None
    moment = quiet_hours_start(due, tz, start, end) - JUST_BEFORE
    # Measured from the moment it goes out: 22:29 is 3 h 01 min before 01:30, too early for
    # three hours, and ``early`` of zero never moves a nudge at all.
    return moment if due - moment <= early else None
