"""Rituals: add (from a template or by hand), edit, pause, remove, preview (one occurrence's
skip or move: :mod:`service.domain.skips`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.core.exceptions import Ambiguous, Conflict, InvalidInput, NotFound
from service.core.text import as_id, echo, name_key
from service.core.timeutil import zone
from service.db.models import Couple, Ritual, RitualKind
from service.domain import validation
from service.domain.answers import ASKING_KINDS
from service.domain.events import EventType, record
from service.domain.pauses import settle_pause
from service.domain.recurrence import Occurrence, occurrences, schedule_of
from service.domain.templates import TEMPLATES


def resolve(session: Session, ref: str | int, couple: Couple | None = None) -> Ritual:
    """A ritual by id, or by title within a couple."""
    text = str(ref).strip()
    ritual_id = as_id(text)
    if ritual_id is not None:
        ritual = session.get(Ritual, ritual_id)
    elif couple is not None:
        # A couple has few rituals: titles are matched in Python, by the one name rule.
        key = name_key(text)
        candidates = session.scalars(
            sa.select(Ritual)
            .where(Ritual.couple_id == couple.id, Ritual.ended_at.is_(None))
            .order_by(Ritual.id)
        )
        found = [r for r in candidates if name_key(r.title) == key]
        # Titles need not be unique: picking one would act on a ritual nobody chose.
        if len(found) > 1:
            raise Ambiguous("ritual", ref, [f"{r.id}:{r.title}" for r in found])
        ritual = found[0] if found else None
    else:
        raise InvalidInput(
            "ritual",
            f"{echo(text)} is not an id",
            "give --couple to name it by title, or the id from `hearth ritual list`",
        )
    if ritual is None or (couple is not None and ritual.couple_id != couple.id):
        raise NotFound("ritual", ref)
    return ritual


@dataclass
class RitualSpec:
    """What a person asked for, before validation; None means 'not given'."""

    kind: str | None = None
    title: str | None = None
    description: str | None = None
    at: str | None = None
    every: str | None = None
    rrule: str | None = None
    on: str | None = None  # start date (YYYY-MM-DD); for yearly rituals, the date itself
    duration: str | None = None
    remind: str | None = None
    channels: str | None = None
    timezone: str | None = None


def add(
    session: Session,
    now: datetime,
    couple: Couple,
    spec: RitualSpec,
    template: str | None = None,
    ask: bool | None = None,
) -> Ritual:
    """``ask``: the shared question (service/replies/question.py); None: on for check-ins
    and gratitude."""
    tz = validation.timezone(spec.timezone) if spec.timezone else couple.timezone
    today = now.astimezone(zone(tz)).date()
    if template is not None:
        tpl = TEMPLATES.get(template)
        if tpl is None:
            raise InvalidInput(
                "template", f"unknown template {template!r}", "see `hearth templates list`"
            )
        if tpl.kind is RitualKind.REPAIR:
            raise InvalidInput(
                "template", "repair conversations start on request", "use `hearth repair request`"
            )
        kind: RitualKind = tpl.kind
        title = tpl.title
        description = tpl.description
        at = tpl.at
        rule = tpl.rrule
        duration = tpl.duration_minutes
        offsets = list(tpl.offsets)
    else:
        if not spec.kind or not spec.title:
            raise InvalidInput("ritual", "give --template NAME, or --kind and --title")
        kind = _scheduled_kind(spec.kind)
        title, description = spec.title, ""
        at, rule, duration, offsets = None, None, 5, [0]
        if not spec.at:
            raise InvalidInput("at", "a ritual needs a time of day", "e.g. --at 21:00")
    title = validation.name(spec.title or title, "title")
    if spec.description is not None:
        description = validation.free_text(spec.description)
    if spec.at:
        at = validation.clock_time(spec.at, "at")
    start = validation.local_date(spec.on, "on") if spec.on else today
    if spec.every and spec.rrule:
        raise InvalidInput("schedule", "give --every or --rrule, not both")
    if spec.every:
        rule = validation.every(spec.every)
    elif spec.rrule:
        rule = spec.rrule
    elif template == "anniversary":
        if not spec.on:
            raise InvalidInput("on", "an anniversary needs its date", "e.g. --on 2019-06-14")
        rule = f"FREQ=YEARLY;BYMONTH={start.month};BYMONTHDAY={start.day}"
    if rule is None:
        raise InvalidInput("schedule", "give --every or --rrule", "e.g. --every daily")
    rule = validation.rrule(rule, start, tz)
    if spec.duration:
        duration = validation.duration_minutes(spec.duration)
    if spec.remind:
        offsets = validation.offsets(spec.remind)
    chans = validation.channels(spec.channels) if spec.channels else []
    ritual = Ritual(
        couple_id=couple.id,
        uid=f"{uuid.uuid4()}@hearth",
        kind=kind,
        template=template,
        title=title,
        description=description,
        dtstart_date=start,
        start_time=at,
        duration_minutes=duration,
        rrule=rule,
        timezone=tz,
        reminder_offsets=",".join(str(o) for o in offsets),
        channels=",".join(chans),
        ask=ask if ask is not None else kind in ASKING_KINDS,
        version=1,
        created_at=now,
        updated_at=now,
    )
    _has_future(ritual, now)
    session.add(ritual)
    session.flush()
    couple.touch(now)
    record(session, EventType.RITUAL_ADDED, now, couple.id, ritual_id=ritual.id)
    return ritual


def add_one_off(
    session: Session,
    now: datetime,
    couple: Couple,
    *,
    kind: RitualKind,
    title: str,
    description: str,
    start: datetime,
    duration_minutes: int,
    offsets: list[int],
) -> Ritual:
    """A single occurrence (a scheduled repair conversation): a ritual without an RRULE."""
    tz = zone(couple.timezone)
    local = start.astimezone(tz)
    ritual = Ritual(
        couple_id=couple.id,
        uid=f"{uuid.uuid4()}@hearth",
        kind=kind,
        title=title,
        description=description,
        dtstart_date=local.date(),
        start_time=local.time().replace(tzinfo=None),
        duration_minutes=duration_minutes,
        rrule=None,
        timezone=couple.timezone,
        reminder_offsets=",".join(str(o) for o in offsets),
        channels="",
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(ritual)
    session.flush()
    couple.touch(now)
    record(session, EventType.RITUAL_ADDED, now, couple.id, ritual_id=ritual.id, one_off=True)
    return ritual


def edit(
    session: Session, now: datetime, ritual: Ritual, spec: RitualSpec, ask: bool | None = None
) -> Ritual:
    ensure_active(ritual)
    changed: list[str] = []
    if spec.title is not None:
        ritual.title = validation.name(spec.title, "title")
        changed.append("title")
    if spec.description is not None:
        ritual.description = validation.free_text(spec.description)
        changed.append("description")
    if spec.kind is not None:
        if ritual.kind is RitualKind.REPAIR:
            raise InvalidInput("kind", "a repair conversation keeps its kind")
        ritual.kind = _scheduled_kind(spec.kind)
        changed.append("kind")
    if spec.timezone is not None:
        ritual.timezone = validation.timezone(spec.timezone)
        changed.append("timezone")
    if spec.at is not None:
        ritual.start_time = validation.clock_time(spec.at, "at")
        changed.append("at")
    if spec.on is not None:
        ritual.dtstart_date = validation.local_date(spec.on, "on")
        changed.append("on")
    if spec.every and spec.rrule:
        raise InvalidInput("schedule", "give --every or --rrule, not both")
    if spec.every or spec.rrule:
        rule = validation.every(spec.every) if spec.every else spec.rrule
        assert rule is not None
        ritual.rrule = validation.rrule(rule, ritual.dtstart_date, ritual.timezone)
        changed.append("schedule")
    elif ("timezone" in changed or "on" in changed) and ritual.rrule:
        ritual.rrule = validation.rrule(ritual.rrule, ritual.dtstart_date, ritual.timezone)
    if spec.duration is not None:
        ritual.duration_minutes = validation.duration_minutes(spec.duration)
        changed.append("duration")
    if spec.remind is not None:
        ritual.reminder_offsets = ",".join(str(o) for o in validation.offsets(spec.remind))
        changed.append("remind")
    if spec.channels is not None:
        ritual.channels = ",".join(validation.channels(spec.channels))
        changed.append("channels")
    if ask is not None:
        ritual.ask = ask
        changed.append("ask")
    if not changed:
        raise InvalidInput("ritual edit", "nothing to change", "see hearth ritual edit --help")
    if {"at", "on", "schedule", "timezone"} & set(changed):
        _has_future(ritual, now)  # as add checks: one validation path for both
        # Exceptions refer to instants of the old schedule; they no longer apply.
        ritual.exceptions.clear()
    ritual.version += 1
    ritual.updated_at = now
    session.flush()
    ritual.couple.touch(now)
    record(
        session,
        EventType.RITUAL_CHANGED,
        now,
        ritual.couple_id,
        ritual_id=ritual.id,
        fields=changed,
    )
    return ritual


def pause(session: Session, now: datetime, ritual: Ritual, until: datetime | None) -> Ritual:
    ensure_active(ritual)
    if until is not None and until <= now:
        raise InvalidInput("until", "is in the past", "give a future date")
    if ritual.paused_at is not None:  # a pause that ran out: keep it before it is replaced
        settle_pause(ritual, ritual.paused_at, ritual.paused_until or now, now)
    ritual.paused_at, ritual.paused_until = now, until
    ritual.version += 1
    ritual.updated_at = now
    ritual.couple.touch(now)
    record(
        session,
        EventType.RITUAL_PAUSED,
        now,
        ritual.couple_id,
        ritual_id=ritual.id,
        until=until.isoformat() if until else None,
    )
    return ritual


def resume(session: Session, now: datetime, ritual: Ritual) -> Ritual:
    ensure_active(ritual)
    if not ritual.is_paused(now):
        raise Conflict(f"ritual {ritual.id} is not paused")
    assert ritual.paused_at is not None
    settle_pause(ritual, ritual.paused_at, now, now)
    ritual.paused_at = ritual.paused_until = None
    ritual.version += 1
    ritual.updated_at = now
    ritual.couple.touch(now)
    record(session, EventType.RITUAL_RESUMED, now, ritual.couple_id, ritual_id=ritual.id)
    return ritual


def _scheduled_kind(value: str) -> RitualKind:
    """The kinds a person schedules (add and edit alike): repair starts on request."""
    kind = validation.kind(value, exclude=RitualKind.REPAIR)
    if kind is RitualKind.REPAIR:
        raise InvalidInput(
            "kind", "repair conversations start on request", "use `hearth repair request`"
        )
    return kind


def _has_future(ritual: Ritual, now: datetime) -> None:
    # A week first: it holds the next occurrence of every daily or weekly rule, and expanding
    # 800 days of a daily one made each add of an import cost 25 ms (bench/peak.py).
    sched = schedule_of(ritual)
    if ritual.rrule and not any(
        occurrences(sched, now, now + timedelta(days=days)) for days in (8, 800)
    ):
        raise InvalidInput("schedule", "the rule produces no future occurrence")


def ensure_active(ritual: Ritual) -> None:
    """Refuse a ritual that was already removed."""
    if ritual.ended_at is not None:
        raise Conflict(f"ritual {ritual.id} was already removed")


def remove(session: Session, now: datetime, ritual: Ritual) -> None:
    """End the series now: past occurrences stay in partners' calendars (UNTIL)."""
    ensure_active(ritual)
    ritual.ended_at = now
    ritual.version += 1
    ritual.updated_at = now
    ritual.couple.touch(now)
    record(session, EventType.RITUAL_REMOVED, now, ritual.couple_id, ritual_id=ritual.id)


def list_for(
    session: Session, couple: Couple | None, include_removed: bool = False
) -> list[Ritual]:
    stmt = sa.select(Ritual).order_by(Ritual.couple_id, Ritual.id)
    if couple is not None:
        stmt = stmt.where(Ritual.couple_id == couple.id)
    if not include_removed:
        stmt = stmt.where(Ritual.ended_at.is_(None))
    return list(session.scalars(stmt))


def upcoming(ritual: Ritual, now: datetime, count: int) -> list[Occurrence]:
    """The next ``count`` occurrences from ``now`` (looking up to two years ahead)."""
    sched = schedule_of(ritual)
    found: list[Occurrence] = []
    lo = now
    for span in (14, 60, 400, 800):
        hi = now + timedelta(days=span)
        found = occurrences(sched, lo, hi)
        if len(found) >= count:
            break
    return found[:count]


def describe_schedule(ritual: Ritual) -> str:
    at = ritual.start_time.strftime("%H:%M") if ritual.start_time else "all day"
    rule = ritual.rrule or f"once on {ritual.dtstart_date.isoformat()}"
    return f"{at} {ritual.timezone}, {rule}"
