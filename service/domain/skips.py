"""One occurrence changed: skipped or moved (an RFC 5545 EXDATE or RECURRENCE-ID), or found
by its local date. Each change bumps the ritual's version and records an event."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from sqlalchemy.orm import Session

from service.core.exceptions import Conflict, InvalidInput
from service.core.timeutil import localize, zone
from service.db.models import ExceptionKind, OccurrenceException, Ritual
from service.domain.events import EventType, record
from service.domain.recurrence import Schedule, is_occurrence, occurrences, schedule_of


def occurrence_on(ritual: Ritual, day: date) -> datetime:
    """The original start (UTC) of the ritual's occurrence on a local date."""
    tz = zone(ritual.timezone)
    lo = localize(day, time(0), tz)
    hi = localize(day + timedelta(days=1), time(0), tz)
    sched = schedule_of(ritual)
    plain = Schedule(
        sched.dtstart_date,
        sched.start_time,
        sched.duration,
        sched.timezone,
        sched.rrule,
        ends_at=sched.ends_at,
    )
    found = [o.original_start for o in occurrences(plain, lo, hi)]
    if not found:
        raise InvalidInput("date", f"ritual {ritual.id} has no occurrence on {day.isoformat()}")
    return found[0]


def next_occurrence(ritual: Ritual, now: datetime) -> datetime:
    """The original start (UTC) of the ritual's next occurrence not yet skipped (``skip
    RITUAL next``): a tour or a script need not know today's date."""
    sched = schedule_of(ritual)
    for days in (14, 400, 800):  # a yearly ritual's next one may be most of two years away
        found = occurrences(sched, now, now + timedelta(days=days))
        if found:
            return found[0].original_start
    raise InvalidInput("date", f"ritual {ritual.id} has no upcoming occurrence")


def _existing(ritual: Ritual, original: datetime) -> OccurrenceException | None:
    return next((e for e in ritual.exceptions if e.original_start == original), None)


def skip(
    session: Session, now: datetime, ritual: Ritual, original: datetime, source: str = "admin"
) -> OccurrenceException:
    if not is_occurrence(schedule_of(ritual), original):
        raise InvalidInput("date", "no occurrence of this ritual starts then")
    if original < now:
        raise InvalidInput("date", "that occurrence is in the past")
    exc = _existing(ritual, original)
    if exc is not None and exc.kind is ExceptionKind.SKIP:
        raise Conflict("that occurrence is already skipped")
    if exc is None:
        exc = OccurrenceException(ritual_id=ritual.id, original_start=original, created_at=now)
        ritual.exceptions.append(exc)
    exc.kind, exc.new_start, exc.source = ExceptionKind.SKIP, None, source
    _changed(session, now, ritual, EventType.OCCURRENCE_SKIPPED, original)
    return exc


def move(
    session: Session, now: datetime, ritual: Ritual, original: datetime, new_local: datetime
) -> OccurrenceException:
    if not is_occurrence(schedule_of(ritual), original):
        raise InvalidInput("date", "no occurrence of this ritual starts then")
    new_start = localize(new_local.date(), new_local.time(), zone(ritual.timezone))
    if new_start <= now:
        raise InvalidInput("to", "the new time is in the past")
    clash = [
        o
        for o in occurrences(schedule_of(ritual), new_start, new_start + timedelta(seconds=1))
        if o.start == new_start and o.original_start != original
    ]
    if clash:
        # Two occurrences at one instant: partners would get both nudges at once.
        raise InvalidInput(
            "to",
            f"another occurrence of ritual {ritual.id} already starts then",
            "skip or move that one first, or pick another time",
        )
    exc = _existing(ritual, original)
    if exc is None:
        exc = OccurrenceException(ritual_id=ritual.id, original_start=original, created_at=now)
        ritual.exceptions.append(exc)
    exc.kind, exc.new_start, exc.source = ExceptionKind.MOVE, new_start, "admin"
    _changed(session, now, ritual, EventType.OCCURRENCE_MOVED, original, new=new_start.isoformat())
    return exc


def _changed(
    session: Session,
    now: datetime,
    ritual: Ritual,
    kind: EventType,
    original: datetime,
    **extra: str,
) -> None:
    ritual.version += 1  # the calendar entry changed: SEQUENCE moves on
    ritual.updated_at = now
    session.flush()
    ritual.couple.touch(now)
    record(
        session,
        kind,
        now,
        ritual.couple_id,
        ritual_id=ritual.id,
        original=original.isoformat(),
        **extra,
    )
