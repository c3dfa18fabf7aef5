"""A couple's rituals as one iCalendar feed (RFC 5545, with RFC 7986 refresh hints).

Deterministic: the bytes depend only on the data (DTSTAMP is the ritual's last change), so the
ETag changes exactly when the content does. Traps this module avoids, each covered by a test:
RRULE UNTIL is written in UTC (icalendar would drop a zone, and parsers disagree on the
count); REFRESH-INTERVAL carries VALUE=DURATION and X-PUBLISHED-TTL a real duration (PT6H);
EXDATE and RECURRENCE-ID use DTSTART's value type and TZID, and name the rule's own local wall
time (for a time in a DST gap that is the nominal time the rule generates, not the shifted
instant); an RRULE never carries both UNTIL and COUNT (RFC 5545 3.3.10), only the limit that
ends the series first; a series removed before its first instance is CANCELLED rather than
given an UNTIL before its DTSTART; NAME and X-WR-CALNAME need no escaping (see
:func:`calendar_name`). "Today" enters only at day granularity: how far an
open-ended pause is shown, and how far the VTIMEZONEs reach (see :func:`date_floor`).

Times a DST change skips or repeats are pinned: each such occurrence also gets an override
VEVENT whose DTSTART names the instant Hearth reminds at without ambiguity. Clients disagree
there (RFC 5545 and Python read a skipped 02:30 with the offset before the gap and a
repeated 01:45 as the first one; ical.js uses the offset after the change for both), so
without the pin a calendar could show the ritual an hour away from its SMS.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from icalendar import Alarm, Calendar, Event, vDuration, vRecur, vText
from sqlalchemy.orm import Session, selectinload

from service.calendar import pins
from service.calendar.vtimezone import vtimezone
from service.core.i18n import Lang, lang
from service.core.timeutil import UTC, localize
from service.db.models import Couple, ExceptionKind, Ritual
from service.domain import wording
from service.domain.pauses import pause_spans
from service.domain.recurrence import (
    ALL_DAY_NUDGE_TIME,
    Schedule,
    _local_starts,
    first_local_start,
    moved_within,
    occurrences,
    reminder_due,
    schedule_of,
    series_until,
    split_until,
)

PRODID = "-//Hearth//Rituals//EN"
PAUSE_LOOKAHEAD = timedelta(days=400)  # how far an open-ended pause is shown as skipped
VTIMEZONE_YEARS = 20  # transitions and pins listed past the newest DTSTART or this year, the later
_NO_VTIMEZONE = frozenset({"UTC", "Etc/UTC"})  # times in UTC are written with a Z


def etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def nominal_local(s: Schedule, instant: datetime) -> datetime:
    """The rule's local wall time that lands on ``instant`` (aware, in the ritual's zone).

    Differs from ``instant.astimezone(tz)`` only for a time in a spring-forward gap: the rule
    says 02:30, the timeline has 03:30; RFC 5545 identifies the instance by the former.
    """
    tz = ZoneInfo(s.timezone)
    local = instant.astimezone(tz).replace(tzinfo=None)
    # Every instance sits at the ritual's wall time (the rule may not carry BYHOUR/BYMINUTE),
    # so the candidates are that wall time on the neighbouring days; no need to walk the rule.
    wall = s.start_time or time(0)
    for day in (local.date() - timedelta(days=1), local.date(), local.date() + timedelta(days=1)):
        candidate = datetime.combine(day, wall)
        if localize(day, wall, tz) == instant:
            return candidate.replace(tzinfo=tz)
    return local.replace(tzinfo=tz)


def _value(s: Schedule, instant: datetime) -> datetime | date:
    local = nominal_local(s, instant)
    return local.date() if s.all_day else local


def _first_start(s: Schedule) -> datetime:
    """DTSTART: the rule's first instance. RFC 5545 counts DTSTART as an occurrence even when
    it does not match the rule; dateutil does not; starting at the first match agrees both."""
    tz = ZoneInfo(s.timezone)
    wall = s.start_time or time(0)
    start = datetime.combine(s.dtstart_date, wall)
    first = first_local_start(s) or start
    return first.replace(tzinfo=tz)


def _unambiguous(instant: datetime, tz: ZoneInfo) -> datetime:
    """``instant`` as a TZID local time when that wall time names only it, else in UTC."""
    local = instant.astimezone(tz)
    naive = local.replace(tzinfo=None)
    if localize(naive.date(), naive.time(), tz) == instant and (
        naive.replace(tzinfo=tz, fold=1).utcoffset() == naive.replace(tzinfo=tz).utcoffset()
    ):
        return local
    return instant.astimezone(UTC)


def _exdates(s: Schedule, spans: Iterable[tuple[datetime, datetime]]) -> list[datetime]:
    """Originals to exclude: skips, and occurrences whose actual (possibly moved) start falls
    in a pause, as the planner decides who gets a reminder."""
    out = set(s.skips)
    spans = list(spans)

    def paused(at: datetime) -> bool:
        return any(lo <= at < hi for lo, hi in spans)

    plain = replace(s, skips=frozenset(), moves={})
    for lo, hi in spans:
        for o in occurrences(plain, lo, hi):
            if paused(s.moves.get(o.original_start, o.original_start)):
                out.add(o.original_start)
    out.update(original for original, new in s.moves.items() if paused(new))
    return sorted(out)


def _common(ev: Event, ritual: Ritual, t: Lang) -> None:
    ev.add("uid", ritual.uid)
    ev.add("dtstamp", ritual.updated_at.astimezone(UTC))
    ev.add("sequence", ritual.version)
    ev.add("summary", wording.title(ritual, t))
    description = wording.description(ritual, t)
    if description:
        ev.add("description", description)
    ev.add("categories", [ritual.kind.value])
    ev.add("transp", "TRANSPARENT")


def _alarms(ev: Event, ritual: Ritual, s: Schedule, t: Lang) -> None:
    """Relative triggers on the master: whole days are nominal days from the wall time
    (``-P1D`` is the same time the day before), the rest exact, as the planner sends."""
    for minutes in ritual.offsets:
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        if s.all_day:
            # A DATE starts at midnight, floating; the nudge goes at ALL_DAY_NUDGE_TIME.
            anchor = datetime.combine(date.min, ALL_DAY_NUDGE_TIME) - datetime.min
            alarm.add("trigger", anchor - timedelta(minutes=minutes))
        else:
            alarm.add("trigger", timedelta(minutes=-minutes))
        alarm.add("description", wording.title(ritual, t))
        ev.add_component(alarm)


def _exact_alarms(ev: Event, ritual: Ritual, s: Schedule, start: datetime, t: Lang) -> None:
    """Absolute triggers (UTC) on a pinned or moved occurrence: the planner's instants,
    whatever a reader's arithmetic would make of a relative one near a DST change."""
    for minutes in ritual.offsets:
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        # VALUE=DATE-TIME: without it a reader expects a duration (RFC 5545 3.8.6.3).
        alarm.add(
            "trigger",
            reminder_due(s, start, minutes).astimezone(UTC),
            parameters={"VALUE": "DATE-TIME"},
        )
        alarm.add("description", wording.title(ritual, t))
        ev.add_component(alarm)


def _count_end(s: Schedule, rule: str) -> datetime | None:
    """The instant of the last instance of a COUNT-bounded rule; None without COUNT."""
    if "COUNT" not in vRecur.from_ical(rule):
        return None
    tz = ZoneInfo(s.timezone)
    first = datetime.combine(s.dtstart_date, s.start_time or time(0))
    # COUNT makes the rule finite, so walking it to the end terminates.
    starts = list(_local_starts(replace(s, rrule=rule), first, datetime.max))
    return localize(starts[-1].date(), starts[-1].time(), tz) if starts else None


def _duration(s: Schedule) -> timedelta:
    if s.all_day:
        return timedelta(days=max(1, s.duration // timedelta(days=1)))
    return s.duration


def _override(
    ritual: Ritual, s: Schedule, original: datetime, start: datetime, alarms: bool, t: Lang
) -> Event:
    """One occurrence with its exact instants. DTEND, not DURATION: readers add a DURATION
    on the wall clock (wrong across a change) or in X-WR-TIMEZONE (wrong for a UTC start).
    Start and end in one zone: the ritual's when both wall times are unambiguous, else UTC."""
    ev = Event()
    _common(ev, ritual, t)
    ev.add("recurrence-id", _value(s, original))
    tz = ZoneInfo(s.timezone)
    if s.all_day:
        ev.add("dtstart", start.astimezone(tz).date())
        ev.add("duration", _duration(s))
        if alarms:
            _alarms(ev, ritual, s, t)
        return ev
    _exact_times(ev, s, start)
    if alarms:
        _exact_alarms(ev, ritual, s, start, t)
    return ev


def _exact_times(ev: Event, s: Schedule, start: datetime) -> None:
    """DTSTART and DTEND in one zone: the ritual's when both wall times name one instant,
    else UTC."""
    tz = ZoneInfo(s.timezone)
    end = start + s.duration
    begin, finish = _unambiguous(start, tz), _unambiguous(end, tz)
    if begin.tzinfo is UTC or finish.tzinfo is UTC:
        begin, finish = start.astimezone(UTC), end.astimezone(UTC)
    ev.add("dtstart", begin)
    ev.add("dtend", finish)


def ritual_events(
    couple: Couple,
    ritual: Ritual,
    now: datetime,
    alarms: bool,
    span: tuple[date, date],
    t: Lang | None = None,
) -> list[Event]:
    """The ritual's events; Hearth's own words in them (a repair talk's title and guide) in
    ``t``, the language of the partner the feed belongs to."""
    t = t or lang(None)
    s = schedule_of(ritual)
    first = _first_start(s)
    ev = Event()
    _common(ev, ritual, t)
    ev.add("created", ritual.created_at.astimezone(UTC))
    ev.add("last-modified", ritual.updated_at.astimezone(UTC))
    start = first
    if not s.rrule and first in s.moves:
        # A moved one-off (a rescheduled repair talk) is simply at its new time.
        start = _unambiguous(s.moves[first], ZoneInfo(s.timezone))
    one_off = not s.rrule and not s.all_day
    if one_off:
        # Exact, as an override is: a DURATION (or a relative trigger) would be added on a
        # wall clock by some readers, wrong across a DST change.
        _exact_times(ev, s, start.astimezone(UTC))
    else:
        ev.add("dtstart", start.date() if s.all_day else start)
        ev.add("duration", _duration(s))
    until = series_until(s) if s.rrule else None
    if s.rrule and until is not None and until < first:
        # Removed (or bounded) before its first instance: the series has none. An UNTIL before
        # DTSTART says so only to parsers that apply it to DTSTART too (RFC 5545 counts DTSTART
        # as an instance), so the event is cancelled outright, as a removed one-off is.
        ev.add("status", "CANCELLED")
        if alarms:
            _alarms(ev, ritual, s, t)
        return [ev]
    excluded = _exdates(s, pause_spans(couple, ritual, now + PAUSE_LOOKAHEAD))
    if s.rrule:
        rule, _ = split_until(s.rrule)
        recur = vRecur.from_ical(rule)
        count_end = _count_end(s, rule) if until is not None else None
        if until is not None and count_end is not None and count_end <= until:
            until = None  # COUNT ends the series first (or with it): COUNT alone says it all
        if until is not None:
            # UNTIL and COUNT must not both appear (RFC 5545 3.3.10); UNTIL ends it first.
            recur.pop("COUNT", None)
            # UNTIL in UTC for timed events (RFC 5545 3.3.10); a DATE for all-day ones.
            recur["UNTIL"] = (
                [until.astimezone(ZoneInfo(s.timezone)).date()]
                if s.all_day
                else [until.astimezone(UTC).replace(microsecond=0)]
            )
        ev.add("rrule", recur)
        if excluded:
            ev.add("exdate", [_value(s, x) for x in excluded])
    elif excluded or (s.ends_at is not None and s.ends_at <= start):
        ev.add("status", "CANCELLED")  # a one-off that was skipped, paused or removed
    if alarms and one_off:
        _exact_alarms(ev, ritual, s, start.astimezone(UTC), t)
    elif alarms:
        _alarms(ev, ritual, s, t)
    events = [ev]
    if not s.rrule:
        return events
    moved = {
        exc.original_start: exc.new_start
        for exc in ritual.exceptions
        if exc.kind is ExceptionKind.MOVE
        and exc.new_start is not None
        and moved_within(s, exc.original_start, exc.new_start)
    }
    if not s.all_day:
        for instant in pins.pinned(s, *span, ritual.offsets if alarms else ()):
            if instant not in excluded and instant not in moved:
                events.append(_override(ritual, s, instant, instant, alarms, t))
    for original, new in sorted(moved.items()):
        if original not in excluded:
            events.append(_override(ritual, s, original, new, alarms, t))
    return events


def _span(timed: list[Ritual], today: date) -> tuple[date, date]:
    """The days the VTIMEZONEs and the DST pins cover. Past a VTIMEZONE's last observance a
    client keeps that observance's offset, so the end follows today as well as the newest
    DTSTART: a ritual started in 2005 would otherwise be an hour off every summer after 2020.
    It moves once a year, and the build is keyed by day, so the bytes stay stable per day."""
    if not timed:
        return date(2000, 1, 1), date(2000, 1, 1)
    first = date(min(r.dtstart_date for r in timed).year - 1, 1, 1)
    newest = max(max(r.dtstart_date for r in timed).year, today.year)
    return first, date(newest + VTIMEZONE_YEARS, 12, 31)


def calendar_name(couple_name: str, t: Lang | None = None) -> str:
    """The calendar's NAME and X-WR-CALNAME: the couple's name with no character that TEXT
    escapes. Both are TEXT, but ical.js and icalendar hand ``\\,`` and ``\\;`` back with the
    backslash (neither knows the properties), so a separator becomes a middle dot instead."""
    plain = re.sub(r"\s*[,;\\\r\n]+\s*", " · ", couple_name).strip(" ·")
    return (t or lang(None))._("{couple} — rituals").format(couple=plain or "Our")


def date_floor(couple: Couple, rituals: list[Ritual], now: datetime) -> datetime | None:
    """Since when the calendar built for ``now`` has had its form for a reason other than a
    change of data, or None when it depends on the data only. Today's start when an
    open-ended pause is shown (its end moves daily); the start of the year when the VTIMEZONE
    range is counted from today (:func:`_span`). A Last-Modified earlier than this would tell
    an If-Modified-Since client that a body it has not seen is unchanged."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    open_ended = couple.paused_at is not None and couple.paused_until is None
    if open_ended or any(r.paused_at is not None and r.paused_until is None for r in rituals):
        return day
    timed = [r for r in rituals if r.start_time is not None]
    zoned = any(r.timezone not in _NO_VTIMEZONE for r in timed)
    if zoned and day.year > max(r.dtstart_date for r in timed).year:
        return day.replace(month=1, day=1)
    return None


def build_calendar(
    couple: Couple,
    rituals: list[Ritual],
    *,
    now: datetime,
    alarms: bool = False,
    refresh_hours: int = 6,
    language: str | None = None,
) -> bytes:
    """One VCALENDAR for the couple, as the partner reading ``language`` sees it. ``now``
    only decides, to the day, how far an open-ended pause is shown and how far the
    VTIMEZONEs reach; everything else comes from the data."""
    t = lang(language)
    now = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    # icalendar has no type for these two and would write them unescaped; both are TEXT.
    name = vText(calendar_name(couple.name, t))
    cal.add("name", name)
    cal.add("x-wr-calname", name)
    refresh = timedelta(hours=refresh_hours)
    cal.add("refresh-interval", vDuration(refresh), parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", vDuration(refresh))
    ordered = sorted(rituals, key=lambda r: r.id)
    timed = [r for r in ordered if r.start_time is not None]
    zones = sorted({r.timezone for r in timed} - _NO_VTIMEZONE)
    span = _span(timed, now.date())
    for tzid in zones:
        cal.add_component(vtimezone(tzid, *span))
    for ritual in ordered:
        for ev in ritual_events(couple, ritual, now, alarms, span, t):
            cal.add_component(ev)
    return cal.to_ical()


def feed_rituals(session: Session, couple: Couple) -> list[Ritual]:
    """The couple's rituals as a feed shows them (removed ones too: their past stays), with
    their exceptions loaded in one more query."""
    return list(
        session.scalars(
            sa.select(Ritual)
            .where(Ritual.couple_id == couple.id)
            .options(selectinload(Ritual.exceptions))
            .order_by(Ritual.id)
        )
    )
