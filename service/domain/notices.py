"""One-off notices to a partner: a NOTICE row in the outbox, its text stored with it.

The dispatcher sends it on the partner's channels like any reminder, holding it through their
quiet hours; it is worth sending for half a day. Used where a partner's own action affects
the other (a pause from their page), as repair uses the same rows for its notices.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from service.core.timeutil import quiet_hours_end, zone
from service.db.models import Channel, Partner, Reminder, ReminderPurpose, ReminderState
from service.domain import partners

FRESH_FOR = timedelta(hours=12)


def tell(session: Session, now: datetime, to: Partner, text: str) -> int:
    """Queue ``text`` to ``to`` on each channel that can reach them; returns how many."""
    due = now
    if to.quiet_start is not None and to.quiet_end is not None:
        due = quiet_hours_end(now, zone(to.timezone), to.quiet_start, to.quiet_end)
    queued = 0
    for ch in to.channel_list:
        if not (partners.can_text(to) if ch is Channel.SMS else partners.can_email(to)):
            continue
        session.add(
            Reminder(
                couple_id=to.couple_id,
                ritual_id=None,
                partner_id=to.id,
                channel=ch,
                offset_minutes=0,
                purpose=ReminderPurpose.NOTICE,
                occurrence_start=due,
                due_at=due,
                expires_at=due + FRESH_FOR,
                state=ReminderState.SCHEDULED,
                attempts=0,
                next_attempt_at=due,
                body=text,
                created_at=now,
                updated_at=now,
            )
        )
        queued += 1
    session.flush()
    return queued
