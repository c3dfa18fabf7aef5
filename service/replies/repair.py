"""The repair-conversation flow (RITUALS.md), driven by the ``repair.requested`` event.

1. A request (SMS ``REPAIR`` or ``hearth repair request``) is stored and announced.
2. The daemon reacts: the first slot after the cooling-off gap that lies outside both
   partners' quiet hours (in their own zones) and collides with no other ritual occurrence,
   within the window. No slot: both are told, and the admin can pick one with ``--at``.
3. A slot: a one-off ``repair`` ritual (the feed gains the event with the guide; the planner
   adds the reminder before it), an invitation to both now, a follow-up the next day.

Hearth is not therapy: where there is a history of abuse, trauma or repeated betrayal, a
couples therapist is the right next step.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from service.core.exceptions import Conflict, InvalidInput, NotFound
from service.core.i18n import N_, Lang, lang
from service.core.timeutil import in_quiet_hours, localize, quiet_hours_end, zone
from service.db.context import Hearth
from service.db.models import (
    Channel,
    Couple,
    Event,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
    RepairRequest,
    RepairState,
    Ritual,
    RitualKind,
)
from service.domain import partners, rituals, wording
from service.domain.events import EventType, record
from service.domain.pauses import in_pause
from service.domain.recurrence import occurrences, schedule_of
from service.outbox.gates import REPAIR_NIGHT
from service.replies.reactions import on

log = structlog.get_logger("hearth.repair")

GUIDE = wording.GUIDE  # the repair ritual's description, shown in each partner's language
# Without quiet hours of their own, nobody is invited to a hard talk in the middle of the night
# (the send-time gate holds repair texts to it too).
DEFAULT_QUIET = REPAIR_NIGHT
# Awake this long before the reminder: time for the invitation to arrive and be read.
LEAD_MARGIN_MINUTES = 30
STEP = timedelta(minutes=15)


def request(
    session: Session,
    now: datetime,
    couple: Couple,
    by: Partner | None,
    source: str,
    at: datetime | None = None,
) -> RepairRequest:
    if by is not None and by.couple_id != couple.id:
        raise InvalidInput("by", f"{by.name} is not a partner of {couple.name}")
    if at is not None and at <= now:
        raise InvalidInput("at", "is in the past", "give a future local time")
    if not couple.partners:  # nobody to invite: a slot would be chosen for no one
        raise Conflict(f"couple {couple.name!r} has no partners yet: `hearth partner add` first")
    open_ = session.scalar(
        sa.select(RepairRequest).where(
            RepairRequest.couple_id == couple.id,
            RepairRequest.state.in_([RepairState.REQUESTED, RepairState.SCHEDULED]),
            sa.or_(RepairRequest.slot_start.is_(None), RepairRequest.slot_start > now),
        )
    )
    if open_ is not None:
        raise Conflict(f"couple {couple.name!r} already has a repair conversation pending")
    req = RepairRequest(
        couple_id=couple.id,
        requested_by=by.id if by else None,
        requested_at=now,
        state=RepairState.REQUESTED,
        slot_start=at,
        source=source,
        created_at=now,
        updated_at=now,
    )
    session.add(req)
    session.flush()
    record(
        session,
        EventType.REPAIR_REQUESTED,
        now,
        couple.id,
        repair_id=req.id,
        at=at.isoformat() if at else None,
    )
    return req


def _quiet(p: Partner) -> tuple[time, time]:
    if p.quiet_start is not None and p.quiet_end is not None:
        return p.quiet_start, p.quiet_end
    return DEFAULT_QUIET


def _calm(p: Partner, start: datetime, end: datetime) -> bool:
    """True when no minute of [start, end) falls in the partner's quiet hours."""
    tz = zone(p.timezone)
    qs, qe = _quiet(p)
    t = start
    while t < end:
        if in_quiet_hours(t, tz, qs, qe):
            return False
        t += timedelta(minutes=5)
    return not in_quiet_hours(end - timedelta(seconds=1), tz, qs, qe)


def find_slot(
    couple: Couple,
    busy: list[tuple[datetime, datetime]],
    after: datetime,
    until: datetime,
    length: timedelta,
    lead: timedelta = timedelta(0),
) -> datetime | None:
    """The first quarter-hour start in [after, until) that suits both partners, each of them
    also awake for the ``lead`` before it: a talk right at the end of one's quiet hours
    would leave no calm moment for the invitation and the reminder."""
    minute = (after.minute // 15 + 1) * 15 if after.minute % 15 or after.second else after.minute
    t = after.replace(minute=0, second=0, microsecond=0) + timedelta(minutes=minute)
    while t + length <= until:
        end = t + length
        if all(_calm(p, t - lead, end) for p in couple.partners) and not any(
            s < end and t < e for s, e in busy
        ):
            return t
        t += STEP
    return None


def _busy(
    session: Session, couple: Couple, lo: datetime, hi: datetime
) -> list[tuple[datetime, datetime]]:
    spans = []
    for r in rituals.list_for(session, couple):
        if r.is_paused(lo):
            continue
        spans += [(o.start, o.end) for o in occurrences(schedule_of(r), lo - timedelta(days=1), hi)]
    return spans


def schedule(hearth: Hearth, session: Session, req: RepairRequest, now: datetime) -> RepairRequest:
    cfg = hearth.settings.repair
    couple = session.get(Couple, req.couple_id)
    assert couple is not None
    length = timedelta(minutes=cfg.duration_minutes)
    slot = req.slot_start if req.slot_start is not None and req.slot_start > now else None
    if slot is None:
        # Handled late (no daemon ran), the search still leaves time for the invitation to
        # arrive before the talk, and keeps its window's length.
        cooled = req.requested_at + timedelta(hours=cfg.cooldown_hours)
        after = max(cooled, now + timedelta(minutes=cfg.remind_minutes_before))
        until = after + timedelta(hours=cfg.window_hours) - (cooled - req.requested_at)
        lead = timedelta(minutes=cfg.remind_minutes_before + LEAD_MARGIN_MINUTES)
        # Asked for during a pause: the pause would hold back the invitation and the
        # reminder, so the talk goes after it (an open-ended pause leaves no time to offer).
        if couple.is_paused(after) and couple.paused_until is not None:
            until += couple.paused_until - after
            after = couple.paused_until
        paused = couple.is_paused(after)
        busy = _busy(session, couple, after, until)
        slot = None if paused else find_slot(couple, busy, after, until, length, lead)
    req.updated_at = now
    if slot is None:
        req.state = RepairState.NO_SLOT
        _tell(session, now, couple, lambda t: no_slot_text(cfg.window_hours, t))
        record(session, EventType.REPAIR_NO_SLOT, now, couple.id, repair_id=req.id)
        log.warning(
            "repair_no_slot",
            repair_id=req.id,
            couple_id=couple.id,
            hint="hearth repair request COUPLE --at 'YYYY-MM-DD HH:MM'",
        )
        return req
    ritual = rituals.add_one_off(
        session,
        now,
        couple,
        kind=RitualKind.REPAIR,
        title=wording.REPAIR_TITLE,
        description=GUIDE,
        start=slot,
        duration_minutes=cfg.duration_minutes,
        offsets=[cfg.remind_minutes_before],
    )
    req.state, req.slot_start, req.ritual_id = RepairState.SCHEDULED, slot, ritual.id
    _notify(
        session,
        now,
        couple,
        ritual,
        slot,
        ReminderPurpose.INVITE,
        None,
        lambda p: _calm_from(p, now, slot),
    )
    _notify(
        session,
        now,
        couple,
        ritual,
        slot,
        ReminderPurpose.FOLLOWUP,
        None,
        lambda p: _followup_at(p, slot + length, cfg.followup_hours),
    )
    record(
        session,
        EventType.REPAIR_SCHEDULED,
        now,
        couple.id,
        repair_id=req.id,
        slot=slot.isoformat(),
        ritual_id=ritual.id,
    )
    return req


def _calm_from(p: Partner, due: datetime, expires: datetime) -> tuple[datetime, datetime]:
    """``due``, or the end of the partner's quiet hours (theirs, else the default night) if
    that comes before ``expires``: nobody gets a text about a hard talk in the night."""
    calm = quiet_hours_end(due, zone(p.timezone), *_quiet(p))
    return (calm if calm < expires else due), expires


def _followup_at(p: Partner, ended: datetime, hours: float) -> tuple[datetime, datetime]:
    """The talk's end plus ``hours`` on the partner's own wall clock (a DST change in between
    does not shift it), out of their quiet hours."""
    tz = zone(p.timezone)
    wall = ended.astimezone(tz).replace(tzinfo=None) + timedelta(hours=hours)
    at = localize(wall.date(), wall.time(), tz)
    due = quiet_hours_end(at, tz, *_quiet(p))
    return due, due + timedelta(hours=12)


def no_slot_text(window_hours: float, t: Lang | None = None) -> str:
    t = t or lang(None)
    text = t.ngettext(
        "Hearth: we could not find a calm time for both of you in the next {hours} hour. "
        "Your Hearth admin can set one for you.",
        "Hearth: we could not find a calm time for both of you in the next {hours} hours. "
        "Your Hearth admin can set one for you.",
        # A fraction takes the plural in all three languages (CLDR: 1.5 hours, 1,5 Stunden).
        int(window_hours) if window_hours == int(window_hours) else 2,
    )
    return text.format(hours=t.number(window_hours))


CANCELLED_TEXT = N_(
    "Hearth: your planned conversation is called off. Reply REPAIR to find a new time."
)


def _notify(
    session: Session,
    now: datetime,
    couple: Couple,
    ritual: Ritual | None,
    slot: datetime | None,
    purpose: ReminderPurpose,
    body: Callable[[Lang], str] | None,
    when: Callable[[Partner], tuple[datetime, datetime]],
    skip: Partner | None = None,
) -> None:
    """Queue one message per partner and channel (the dispatcher sends it); ``when`` gives
    each partner's (due, expires), ``body`` a notice's text in a partner's language."""
    for p in couple.partners:
        if p is skip:
            continue
        due, expires = when(p)
        text = body(lang(p.language)) if body is not None else None
        for ch in p.channel_list:
            if not (partners.can_text(p) if ch is Channel.SMS else partners.can_email(p)):
                continue
            session.add(
                Reminder(
                    couple_id=couple.id,
                    ritual_id=ritual.id if ritual else None,
                    partner_id=p.id,
                    channel=ch,
                    offset_minutes=0,
                    purpose=purpose,
                    occurrence_start=slot or due,
                    due_at=due,
                    expires_at=expires,
                    state=ReminderState.SCHEDULED,
                    attempts=0,
                    next_attempt_at=due,
                    body=text,
                    created_at=now,
                    updated_at=now,
                )
            )
    session.flush()


def _tell(
    session: Session,
    now: datetime,
    couple: Couple,
    text: Callable[[Lang], str],
    skip: Partner | None = None,
) -> None:
    """A notice to the couple (but ``skip``), each out of their quiet hours, fresh for 12 h."""
    _notify(
        session,
        now,
        couple,
        None,
        None,
        ReminderPurpose.NOTICE,
        text,
        lambda p: _calm_from(p, now, now + timedelta(hours=12)),
        skip=skip,
    )


def cancel(
    session: Session, now: datetime, req: RepairRequest, by: Partner | None = None
) -> RepairRequest:
    """Call the conversation off; partners who were invited (except ``by``) are told."""
    if req.state not in (RepairState.REQUESTED, RepairState.SCHEDULED):
        raise Conflict(f"repair {req.id} is {req.state.value}")
    invited = req.state is RepairState.SCHEDULED and (req.slot_start or now) > now
    req.state, req.updated_at = RepairState.CANCELLED, now
    if req.ritual_id is not None:
        ritual = session.get(Ritual, req.ritual_id)
        if ritual is not None and ritual.ended_at is None:
            rituals.remove(session, now, ritual)
        session.execute(
            sa.update(Reminder)
            .where(Reminder.ritual_id == req.ritual_id, Reminder.state == ReminderState.SCHEDULED)
            .values(state=ReminderState.CANCELLED, last_error="repair cancelled", final_at=now)
        )
    if invited:
        couple = session.get(Couple, req.couple_id)
        assert couple is not None
        _tell(session, now, couple, lambda t: t._(CANCELLED_TEXT), skip=by)
    record(session, EventType.REPAIR_CANCELLED, now, req.couple_id, repair_id=req.id)
    return req


def call_off_for_pause(session: Session, now: datetime, couple: Couple) -> RepairRequest | None:
    """After ``couple`` was paused: the pending talk that would fall in the pause (or is
    still to be arranged) is called off, and both partners are told on each channel, as
    the pause holds back its invitation, reminder and follow-up. The feed, the page and
    ``repair list`` then all show it called off. Returns the request called off."""
    req = session.scalar(
        sa.select(RepairRequest).where(
            RepairRequest.couple_id == couple.id,
            RepairRequest.state.in_([RepairState.REQUESTED, RepairState.SCHEDULED]),
            sa.or_(RepairRequest.slot_start.is_(None), RepairRequest.slot_start > now),
        )
    )
    slot = req.slot_start if req is not None else None
    if req is None or (
        slot is not None and not in_pause(slot, couple.paused_at, couple.paused_until)
    ):
        return None
    invited = req.state is RepairState.SCHEDULED
    cancel(session, now, req)  # tells both when they were invited
    if not invited:
        _tell(session, now, couple, lambda t: t._(CANCELLED_TEXT))
    return req


def for_invitation(session: Session, ritual_id: int | None, now: datetime) -> RepairRequest | None:
    """The scheduled, still upcoming conversation an invitation was about."""
    if ritual_id is None:
        return None
    return session.scalar(
        sa.select(RepairRequest).where(
            RepairRequest.ritual_id == ritual_id,
            RepairRequest.state == RepairState.SCHEDULED,
            RepairRequest.slot_start > now,
        )
    )


def list_requests(session: Session, couple: Couple | None = None) -> list[RepairRequest]:
    """Repair requests, newest first; only ``couple``'s when given."""
    stmt = sa.select(RepairRequest).order_by(RepairRequest.id.desc())
    if couple is not None:
        stmt = stmt.where(RepairRequest.couple_id == couple.id)
    return list(session.scalars(stmt))


def get(session: Session, repair_id: int) -> RepairRequest:
    req = session.get(RepairRequest, repair_id)
    if req is None:
        raise NotFound("repair", repair_id)
    return req


def schedule_pending(hearth: Hearth, repair_id: int | None = None) -> int:
    """Schedule requested conversations (one, or all); returns how many were handled.

    Runs on the ``repair.requested`` event and from the daemon's periodic sweep, so a request
    made while no daemon ran, or whose first attempt failed, is not left waiting. Each request
    is claimed under a row lock (PostgreSQL) or the single writer (SQLite): two workers never
    schedule one request twice.
    """
    with hearth.db.session() as s:
        stmt = sa.select(RepairRequest.id).where(RepairRequest.state == RepairState.REQUESTED)
        if repair_id is not None:
            stmt = stmt.where(RepairRequest.id == repair_id)
        ids = list(s.scalars(stmt.order_by(RepairRequest.id)))
    handled = 0
    for rid in ids:
        try:
            with hearth.db.session(immediate=True) as s:
                req = s.get(RepairRequest, rid, with_for_update=True)
                if req is None or req.state is not RepairState.REQUESTED:
                    continue  # another worker got there first
                schedule(hearth, s, req, hearth.clock.now())
                log.info(
                    "repair_planned", repair_id=rid, couple_id=req.couple_id, state=req.state.value
                )
                handled += 1
        except Exception:
            # One request that cannot be planned must not hold up the others; the sweep
            # tries it again.
            log.exception("repair_planning_failed", repair_id=rid)
    return handled


@on(EventType.REPAIR_REQUESTED)
def _on_requested(hearth: Hearth, event: Event) -> None:
    schedule_pending(hearth, event.payload.get("repair_id"))
