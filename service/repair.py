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

from datetime import datetime, time, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from service import rituals
from service.app import Hearth
from service.events import EventType, record
from service.exceptions import Conflict, InvalidInput, NotFound
from service.handlers import on
from service.models import (
    Channel,
    ConsentState,
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
from service.recurrence import occurrences
from service.timeutil import in_quiet_hours, zone

log = structlog.get_logger("hearth.repair")

GUIDE = (
    "How to talk it through:\n"
    '1. Each of you speaks without interruption, using "I feel ... when ... because ...".\n'
    "2. The listener mirrors back what they heard before answering.\n"
    "3. Validate the feeling before solving anything.\n"
    "4. Apologise sincerely where it fits.\n"
    "5. Agree on one or two concrete steps.\n\n"
    "Hearth is not therapy. Where there is a history of abuse, trauma or repeated betrayal, "
    "a couples therapist is the right next step."
)
# Without quiet hours of their own, nobody is invited to a hard talk in the middle of the night.
DEFAULT_QUIET = (time(22, 0), time(8, 0))
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
    couple: Couple, busy: list[tuple[datetime, datetime]], after: datetime, until: datetime,
    length: timedelta,
) -> datetime | None:  # fmt: skip
    """The first quarter-hour start in [after, until) that suits both partners."""
    minute = (after.minute // 15 + 1) * 15 if after.minute % 15 or after.second else after.minute
    t = after.replace(minute=0, second=0, microsecond=0) + timedelta(minutes=minute)
    while t + length <= until:
        end = t + length
        if all(_calm(p, t, end) for p in couple.partners) and not any(
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
        spans += [
            (o.start, o.end)
            for o in occurrences(rituals.schedule_of(r), lo - timedelta(days=1), hi)
        ]
    return spans


def schedule(hearth: Hearth, session: Session, req: RepairRequest, now: datetime) -> RepairRequest:
    cfg = hearth.settings.repair
    couple = session.get(Couple, req.couple_id)
    assert couple is not None
    length = timedelta(minutes=cfg.duration_minutes)
    if req.slot_start is not None:
        slot: datetime | None = req.slot_start
    else:
        after = req.requested_at + timedelta(hours=cfg.cooldown_hours)
        until = req.requested_at + timedelta(hours=cfg.window_hours)
        slot = find_slot(couple, _busy(session, couple, after, until), after, until, length)
    req.updated_at = now
    if slot is None:
        req.state = RepairState.NO_SLOT
        _notify(session, now, couple, None, None, ReminderPurpose.NOTICE, now,
                no_slot_text(cfg.window_hours), expires=now + timedelta(hours=12))  # fmt: skip
        record(session, EventType.REPAIR_NO_SLOT, now, couple.id, repair_id=req.id)
        return req
    ritual = rituals.add_one_off(
        session,
        now,
        couple,
        kind=RitualKind.REPAIR,
        title="Repair conversation",
        description=GUIDE,
        start=slot,
        duration_minutes=cfg.duration_minutes,
        offsets=[cfg.remind_minutes_before],
    )
    req.state, req.slot_start, req.ritual_id = RepairState.SCHEDULED, slot, ritual.id
    _notify(session, now, couple, ritual, slot, ReminderPurpose.INVITE, now, None, expires=slot)
    follow = slot + length + timedelta(hours=cfg.followup_hours)
    _notify(session, now, couple, ritual, slot, ReminderPurpose.FOLLOWUP, follow, None,
            expires=follow + timedelta(hours=12))  # fmt: skip
    record(session, EventType.REPAIR_SCHEDULED, now, couple.id, repair_id=req.id,
           slot=slot.isoformat(), ritual_id=ritual.id)  # fmt: skip
    return req


def no_slot_text(window_hours: float) -> str:
    return (
        f"Hearth: we could not find a calm time for both of you in the next "
        f"{window_hours:g} hours. Your Hearth admin can set one for you."
    )


def _notify(
    session: Session,
    now: datetime,
    couple: Couple,
    ritual: Ritual | None,
    slot: datetime | None,
    purpose: ReminderPurpose,
    due: datetime,
    body: str | None,
    expires: datetime,
) -> None:
    """Queue one message per partner and channel (the dispatcher sends it)."""
    for p in couple.partners:
        for ch in p.channel_list:
            if ch is Channel.SMS and p.sms_consent is not ConsentState.CONSENTED:
                continue
            if ch is Channel.EMAIL and p.email_opted_out_at is not None:
                continue
            session.add(
                Reminder(
                    couple_id=couple.id, ritual_id=ritual.id if ritual else None, partner_id=p.id,
                    channel=ch, offset_minutes=0, purpose=purpose, occurrence_start=slot or due,
                    due_at=due, expires_at=expires,
                    state=ReminderState.SCHEDULED, attempts=0, next_attempt_at=due, body=body,
                    created_at=now, updated_at=now,
                )
            )  # fmt: skip
    session.flush()


def cancel(session: Session, now: datetime, req: RepairRequest) -> RepairRequest:
    if req.state not in (RepairState.REQUESTED, RepairState.SCHEDULED):
        raise Conflict(f"repair {req.id} is {req.state.value}")
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
    record(session, EventType.REPAIR_CANCELLED, now, req.couple_id, repair_id=req.id)
    return req


def get(session: Session, repair_id: int) -> RepairRequest:
    req = session.get(RepairRequest, repair_id)
    if req is None:
        raise NotFound("repair", repair_id)
    return req


@on(EventType.REPAIR_REQUESTED)
def _on_requested(hearth: Hearth, event: Event) -> None:
    repair_id = event.payload.get("repair_id")
    with hearth.db.session(immediate=True) as s:
        req = s.get(RepairRequest, repair_id)
        if req is None or req.state is not RepairState.REQUESTED:
            return  # already handled (reactions may see an event twice)
        schedule(hearth, s, req, hearth.clock.now())
        log.info("repair_planned", repair_id=req.id, couple_id=req.couple_id, state=req.state.value)
