"""The outbox seen by an admin: list, requeue (`deliveries retry`), a test message."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.channels import Message, Receipt, build_one
from service.channels.base import TransportError
from service.core.exceptions import Conflict, HearthError, InvalidInput, NotFound
from service.core.i18n import lang
from service.db.context import Hearth
from service.db.models import Channel, ConsentState, Couple, Partner, Reminder, ReminderState
from service.domain.events import EventType, record

RETRYABLE = (
    ReminderState.FAILED,
    ReminderState.EXPIRED,
    ReminderState.UNDELIVERED,
    ReminderState.SKIPPED,
)


def list_(
    session: Session,
    *,
    couple: Couple | None = None,
    state: ReminderState | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> list[Reminder]:
    stmt = sa.select(Reminder).order_by(Reminder.due_at.desc(), Reminder.id.desc()).limit(limit)
    if couple is not None:
        stmt = stmt.where(Reminder.couple_id == couple.id)
    if state is not None:
        stmt = stmt.where(Reminder.state == state)
    if since is not None:
        stmt = stmt.where(Reminder.due_at >= since)
    return list(session.scalars(stmt))


def requeue(session: Session, now: datetime, reminder_id: int, fresh_minutes: float) -> Reminder:
    """Queue a finished reminder again, now, with a fresh expiry."""
    r = session.get(Reminder, reminder_id)
    if r is None:
        raise NotFound("reminder", reminder_id)
    if r.state not in RETRYABLE:
        raise Conflict(
            f"reminder {r.id} is {r.state.value}; only "
            + ", ".join(s.value for s in RETRYABLE)
            + " reminders can be retried"
        )
    r.state = ReminderState.SCHEDULED
    r.next_attempt_at = now
    r.expires_at = max(r.expires_at, now + timedelta(minutes=fresh_minutes))
    r.last_error = None
    r.final_at = None
    r.updated_at = now
    record(session, EventType.REMINDER_RETRIED, now, r.couple_id, reminder_id=r.id)
    return r


class SendFailed(HearthError):
    exit_code = 1

    def __init__(self, channel: Channel, error: TransportError) -> None:
        kind = "permanent" if error.permanent else "temporary"
        super().__init__(f"{channel.value} test failed ({kind}): {error}")


def send_test(hearth: Hearth, partner: Partner, channel: Channel) -> Receipt:
    """One real message through the configured channel (clear errors when it cannot be)."""
    if channel is Channel.SMS:
        if not partner.phone:
            raise InvalidInput("channel", f"{partner.name} has no phone number", "add --phone")
        if partner.sms_consent is not ConsentState.CONSENTED:
            raise InvalidInput(
                "sms consent",
                f"not recorded for {partner.name}",
                "hearth partner edit --sms-consent SOURCE",
            )
        to = partner.phone
    else:
        if not partner.email:
            raise InvalidInput("channel", f"{partner.name} has no email address", "add --email")
        to = partner.email
    transport = build_one(hearth.settings, channel)
    t = lang(partner.language)  # what the partner reads, though an admin sends it
    # Email replies are not read: only a text can be answered STOP. Each reminder email
    # carries its own unsubscribe link.
    text = (
        t._("Hearth test message: reminders will reach you here. Reply STOP to opt out.")
        if channel is Channel.SMS
        else t._(
            "Hearth test message: reminders will reach you here. Each reminder email has a"
            " link to stop them."
        )
        + "\n"
    )
    message = Message(to=to, text=text, subject=t._("Hearth test message"))
    try:
        transport.pace(message)
        return transport.send(message)
    except TransportError as exc:
        raise SendFailed(channel, exc) from None
    finally:
        transport.close()
