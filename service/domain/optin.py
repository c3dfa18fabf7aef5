"""Joining by SMS: double opt-in for a number the admin added without recorded consent.

The number gets one confirmation text (who is texting, what for, how often, rates, HELP,
STOP, "Reply YES to start"); it is the only text that may go to it until it answers YES
(the dispatcher lets a ``confirm`` row through to a pending partner, nothing else). A number
that ever said STOP gets nothing at all, not even the confirmation.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.core.i18n import N_, Lang, lang
from service.db.models import (
    Channel,
    ConsentState,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
)

FRESH = timedelta(days=2)
# Carrier content: who, what for, how often, rates, HELP, STOP, how to join (in every
# language; the partner's own words for HELP and YES work, the English ones too).
CONFIRMATION = N_(
    "Hearth: reminders for the relationship rituals of {name}. "
    "Msg frequency varies, usually 1-2 a day. Msg&data rates may apply. "
    "Reply HELP for help, STOP to opt out. Reply YES to start."
)


def confirmation_text(couple_name: str, t: Lang | None = None) -> str:
    name = couple_name if len(couple_name) <= 40 else couple_name[:39] + "."
    return (t or lang(None))._(CONFIRMATION).format(name=name)


def said_stop(session: Session, phone: str) -> bool:
    """Whether this number is opted out by text: a STOP opts out every partner on the
    number (it is the number's, not the partner row's), so a new row for it is too."""
    return (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(Partner)
            .where(Partner.phone == phone, Partner.sms_consent == ConsentState.OPTED_OUT)
        )
        or 0
    ) > 0


def queue_confirmation(session: Session, now: datetime, partner: Partner) -> None:
    """The confirmation text, through the outbox (quiet hours and expiry apply to it too)."""
    assert partner.phone is not None
    session.add(
        Reminder(
            couple_id=partner.couple_id,
            ritual_id=None,
            partner_id=partner.id,
            channel=Channel.SMS,
            offset_minutes=0,
            purpose=ReminderPurpose.CONFIRM,
            occurrence_start=now,
            due_at=now,
            expires_at=now + FRESH,
            state=ReminderState.SCHEDULED,
            attempts=0,
            next_attempt_at=now,
            body=confirmation_text(partner.couple.name, lang(partner.language)),
            created_at=now,
            updated_at=now,
        )
    )
    session.flush()


def may_receive(p: Partner, channel: Channel, purpose: ReminderPurpose) -> bool:
    """The send-time rule: SMS needs consent, except the confirmation to a pending number."""
    if channel is Channel.EMAIL:
        return bool(p.email) and p.email_opted_out_at is None
    if purpose is ReminderPurpose.CONFIRM:
        return bool(p.phone) and p.sms_consent is ConsentState.PENDING
    return bool(p.phone) and p.sms_consent is ConsentState.CONSENTED
