"""What replies look up and queue: the latest text a partner got, a chase, a one-off message.

Every text a reply causes for someone other than the sender goes through the outbox, so it
gets the send-time gates (STOP, quiet hours, expiry) and is never lost.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.context import Hearth
from service.db.models import (
    Channel,
    CheckIn,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
    Ritual,
    RitualKind,
)
from service.domain import partners, stats

NUDGES = (ReminderPurpose.NUDGE, ReminderPurpose.SNOOZE, ReminderPurpose.CHASE)
MESSAGE_FRESH = timedelta(hours=12)
# A reveal waits out the longest quiet hours and still arrives (an answer is never lost).
REVEAL_FRESH = timedelta(days=2)


def latest_sent(
    session: Session, partner: Partner, *purposes: ReminderPurpose, channel: Channel | None = None
) -> Reminder | None:
    """The latest reminder of these purposes sent to ``partner`` (on ``channel`` if given)."""
    stmt = sa.select(Reminder).where(
        Reminder.partner_id == partner.id,
        Reminder.purpose.in_(purposes),
        Reminder.state.in_([ReminderState.SENT, ReminderState.DELIVERED]),
    )
    if channel is not None:
        stmt = stmt.where(Reminder.channel == channel)
    return session.scalar(stmt.order_by(Reminder.sent_at.desc(), Reminder.id.desc()).limit(1))


def add_once(session: Session, reminder: Reminder) -> bool:
    """Add a reminder unless its unique key exists; False if it did. The insert runs inside
    a savepoint (added within it), so a clash rolls back only the savepoint."""
    try:
        with session.begin_nested():
            session.add(reminder)
            session.flush()
    except sa.exc.IntegrityError:
        return False
    return True


def chase(
    hearth: Hearth,
    session: Session,
    now: datetime,
    partner: Partner,
    ritual: Ritual,
    occurrence: datetime,
) -> None:
    """One gentle text to each other partner who has not said DONE, ``chase_hours`` before
    the grace period ends; the dispatcher drops it if they answer first."""
    hours = hearth.settings.replies.chase_hours
    if not hours or ritual.kind is RitualKind.REPAIR:
        return
    end = stats.grace_end(ritual, occurrence, hearth.settings.replies.grace)
    due = max(now, end - timedelta(hours=hours))
    if due >= end:
        return
    answered = set(
        session.scalars(
            sa.select(CheckIn.partner_id).where(
                CheckIn.ritual_id == ritual.id, CheckIn.occurrence_start == occurrence
            )
        )
    )
    for other in partner.couple.partners:
        if other.id in answered or not partners.can_text(other):
            continue
        if Channel.SMS not in other.channel_list:
            continue
        add_once(  # once per partner and occurrence: a clash means chased already
            session,
            Reminder(
                couple_id=other.couple_id,
                ritual_id=ritual.id,
                partner_id=other.id,
                channel=Channel.SMS,
                offset_minutes=0,
                purpose=ReminderPurpose.CHASE,
                occurrence_start=occurrence,
                due_at=due,
                expires_at=end,
                state=ReminderState.SCHEDULED,
                attempts=0,
                next_attempt_at=due,
                created_at=now,
                updated_at=now,
            ),
        )


def message(
    hearth: Hearth,
    session: Session,
    now: datetime,
    to: Partner,
    text: str,
    *,
    channel: Channel = Channel.SMS,
    ritual_id: int | None = None,
    occurrence: datetime | None = None,
    fresh: timedelta = MESSAGE_FRESH,
    words: bool = False,
) -> bool:
    """Queue a one-off text for ``to``, out now; False if they cannot get it on ``channel``,
    or (with a ritual) it was queued for that occurrence already.

    Sealed at rest when a key is set. ``words``: the text quotes what a partner wrote (a
    reveal), so it is always sealed and needs a key; Hearth's own notices ("Alex paused your
    rituals") are kept as the dispatcher keeps every nudge's text when no key is set, so a
    PAUSE on an install without a key still tells the other partner."""
    reachable = partners.can_text(to) if channel is Channel.SMS else partners.can_email(to)
    if not reachable or (channel is Channel.SMS and Channel.SMS not in to.channel_list):
        return False
    row = Reminder(
        couple_id=to.couple_id,
        ritual_id=ritual_id,
        partner_id=to.id,
        channel=channel,
        offset_minutes=0,
        purpose=ReminderPurpose.MESSAGE,
        occurrence_start=occurrence or now,
        due_at=now,
        expires_at=now + fresh,
        state=ReminderState.SCHEDULED,
        attempts=0,
        next_attempt_at=now,
        body=hearth.keys.seal(text) if words or hearth.keys.configured else text,
        created_at=now,
        updated_at=now,
    )
    if ritual_id is None:
        session.add(row)
        session.flush()
        return True
    return add_once(session, row)


def others(partner: Partner) -> list[Partner]:
    return [p for p in partner.couple.partners if p.id != partner.id]


def tell(hearth: Hearth, session: Session, now: datetime, to: Partner, text: str) -> bool:
    """A message to ``to`` on the first of their channels that reaches them; False if none."""
    return any(message(hearth, session, now, to, text, channel=ch) for ch in to.channel_list)
