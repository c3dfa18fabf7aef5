"""SNOOZE: a partner's nudge, once more, a little later."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.core.i18n import Lang
from service.core.timeutil import in_quiet_hours, zone
from service.db.models import Channel, Partner, Reminder, ReminderPurpose, ReminderState
from service.replies import outgoing

SNOOZE_DEFAULT, SNOOZE_MAX = 30, 180
# "SNOOZE 45", "snooze 45 min", "Snooze 1h", "später 2 Std", "luego 10 minutos" (folded)
_SNOOZE_ARG = re.compile(
    r"(?P<n>\d{1,4})\s*(?P<unit>M|MIN|MINS|MINUTES?|MINUTEN|MINUTOS?"
    r"|H|HR|HRS|HOURS?|STD|STUNDEN?|HORAS?)?"
)


def snooze(
    session: Session, now: datetime, partner: Partner, arg: str | None, lang: Lang
) -> tuple[str, str, int | None]:
    """SNOOZE [minutes]: the text the partner got comes again later (never past its expiry,
    never in their quiet hours); a second SNOOZE replaces the first."""
    match = _SNOOZE_ARG.fullmatch(arg or "")
    if arg and match is None:
        bad = lang._("Hearth: SNOOZE takes minutes, e.g. SNOOZE {minutes}.")
        return bad.format(minutes=SNOOZE_DEFAULT), "snooze: bad", None
    minutes = SNOOZE_DEFAULT
    if match is not None and match["n"]:
        minutes = int(match["n"]) * (60 if (match["unit"] or "M")[0] in "HS" else 1)
    minutes = max(5, min(SNOOZE_MAX, minutes))
    # The partner texted: snooze the text they got (an email sent alongside finishes a few
    # milliseconds apart and is not what they answer); email only if no text went out.
    nudges = (ReminderPurpose.NUDGE, ReminderPurpose.SNOOZE)
    last = outgoing.latest_sent(
        session, partner, *nudges, channel=Channel.SMS
    ) or outgoing.latest_sent(session, partner, *nudges)
    if last is None or last.ritual_id is None:
        return lang._("Hearth: there is nothing to snooze."), "snooze: nothing", None
    due = now + timedelta(minutes=minutes)
    if due >= last.expires_at:
        due = last.expires_at - timedelta(minutes=1)  # never past expiry
    if due <= now + timedelta(minutes=1):
        return lang._("Hearth: too late to snooze this one."), "snooze: too late", last.ritual_id
    tz = zone(partner.timezone)
    if in_quiet_hours(due, tz, partner.quiet_start, partner.quiet_end):
        return lang._("Hearth: that would fall in your quiet hours."), "snooze: quiet hours", None
    offset = -int((due - last.occurrence_start).total_seconds() // 60)
    snooze = Reminder(
        couple_id=last.couple_id,
        ritual_id=last.ritual_id,
        partner_id=partner.id,
        channel=last.channel,
        offset_minutes=offset,
        purpose=ReminderPurpose.SNOOZE,
        occurrence_start=last.occurrence_start,
        due_at=due,
        expires_at=last.expires_at,
        state=ReminderState.SCHEDULED,
        attempts=0,
        next_attempt_at=due,
        prompt_id=last.prompt_id,
        created_at=now,
        updated_at=now,
    )
    if not outgoing.add_once(session, snooze):
        return lang._("Hearth: already snoozed to then."), "snooze: duplicate", last.ritual_id
    # A second SNOOZE replaces the first: one reminder, at the time last asked for.
    session.execute(
        sa.update(Reminder)
        .where(
            Reminder.ritual_id == last.ritual_id,
            Reminder.occurrence_start == last.occurrence_start,
            Reminder.partner_id == partner.id,
            Reminder.purpose == ReminderPurpose.SNOOZE,
            Reminder.state == ReminderState.SCHEDULED,
            Reminder.id != snooze.id,
        )
        .values(
            state=ReminderState.CANCELLED,
            last_error="snooze replaced",
            final_at=now,
            updated_at=now,
        )
    )
    local = due.astimezone(tz)
    return (
        lang._("Hearth: snoozed, we'll remind you at {time}.").format(time=lang.time(local)),
        f"snoozed {minutes} min",
        last.ritual_id,
    )
