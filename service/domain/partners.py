"""Partners: contact details, zone, channels, quiet hours, consent."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from service.core import i18n
from service.core.exceptions import Ambiguous, Conflict, InvalidInput, NotFound
from service.core.metrics import observe_cancelled
from service.core.text import as_id, name_key
from service.db import optouts
from service.db.models import (
    Channel,
    ConsentRecord,
    ConsentState,
    Couple,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
)
from service.domain import optin, validation
from service.domain.events import EventType, record

UNSET = object()


def resolve(session: Session, ref: str | int, couple: Couple | None = None) -> Partner:
    """A partner by id, by name (unique across couples, or within ``couple``), or by
    ``Couple/Name``."""
    text = str(ref).strip()
    partner_id = as_id(text)
    if partner_id is not None:
        partner = session.get(Partner, partner_id)
        if partner is None or (couple is not None and partner.couple_id != couple.id):
            raise NotFound("partner", ref)
        return partner
    stmt = sa.select(Partner).join(Couple)
    if "/" in text and couple is None:
        couple_name, _, text = text.partition("/")
        stmt = stmt.where(Couple.name_key == name_key(couple_name))
    if couple is not None:
        stmt = stmt.where(Partner.couple_id == couple.id)
    found = list(session.scalars(stmt.where(Partner.name_key == name_key(text))))
    if not found:
        raise NotFound("partner", ref)
    if len(found) > 1:
        raise Ambiguous("partner", ref, [f"{p.id}:{p.couple.name}/{p.name}" for p in found])
    return found[0]


def language_code(value: str) -> str:
    """A language Hearth ships (``DE`` and ``de-AT`` read ``de``), or InvalidInput."""
    try:
        return i18n.check(value)
    except ValueError as exc:
        raise InvalidInput("language", f"unknown language {value!r}", str(exc)) from None


def _check_channels(partner: Partner) -> None:
    for ch in partner.channel_list:
        if ch is Channel.SMS and not partner.phone:
            raise InvalidInput("channel", "sms needs a phone number", "add --phone")
        if ch is Channel.EMAIL and not partner.email:
            raise InvalidInput("channel", "email needs an address", "add --email")


def set_consent(
    session: Session,
    now: datetime,
    partner: Partner,
    state: ConsentState,
    source: str,
    channel: Channel = Channel.SMS,
) -> None:
    """Record a consent change (with time and source) and the event that triggers replanning."""
    if channel is Channel.SMS:
        partner.sms_consent = state
        partner.sms_consent_at = now
        partner.sms_consent_source = source
    else:
        partner.email_opted_out_at = now if state is ConsentState.OPTED_OUT else None
    partner.updated_at = now
    session.add(
        ConsentRecord(partner_id=partner.id, channel=channel, state=state, source=source, at=now)
    )
    session.flush()
    if state is ConsentState.OPTED_OUT:
        optouts.mark(session)  # final for every sender the moment this commits
    kind = {
        ConsentState.OPTED_OUT: EventType.PARTNER_OPTED_OUT,
        ConsentState.CONSENTED: EventType.PARTNER_OPTED_IN,
    }.get(state, EventType.PARTNER_CHANGED)
    record(
        session,
        kind,
        now,
        partner.couple_id,
        partner_id=partner.id,
        channel=str(channel),
        source=source,
    )


def can_text(p: Partner) -> bool:
    return bool(p.phone) and p.sms_consent is ConsentState.CONSENTED


def can_receive(p: Partner, channel: Channel, purpose: ReminderPurpose) -> bool:
    """The send-time rule (see service/domain/optin.py)."""
    return optin.may_receive(p, channel, purpose)


def still_reachable(p: Partner, channel: Channel) -> bool:
    """At the moment of sending, after the gates: not opted out since. A pending partner
    passed them only with the confirmation (the one text it may get)."""
    if channel is Channel.SMS and p.sms_consent is ConsentState.PENDING:
        return bool(p.phone)
    return can_text(p) if channel is Channel.SMS else can_email(p)


def can_email(p: Partner) -> bool:
    return bool(p.email) and p.email_opted_out_at is None


def opt_out_sms(session: Session, now: datetime, phone: str, source: str) -> int:
    """Opt the number out of SMS: every partner texting from it, every pending text to them
    cancelled in this transaction (before any confirmation goes out). Returns how many
    pending texts were cancelled. Consent belongs to the number, as carriers see it."""
    cancelled = 0
    for partner in session.scalars(sa.select(Partner).where(Partner.phone == phone)):
        result = session.execute(
            sa.update(Reminder)
            .where(
                Reminder.partner_id == partner.id,
                Reminder.channel == Channel.SMS,
                Reminder.state == ReminderState.SCHEDULED,
            )
            .values(state=ReminderState.CANCELLED, last_error="opted out", final_at=now)
        )
        n = cast("CursorResult[Any]", result).rowcount
        observe_cancelled(Channel.SMS.value, n)
        cancelled += n
        if partner.sms_consent is not ConsentState.OPTED_OUT:
            set_consent(session, now, partner, ConsentState.OPTED_OUT, source)
    return cancelled


def add(
    session: Session,
    now: datetime,
    couple: Couple,
    *,
    name: str,
    phone: str | None,
    email: str | None,
    timezone: str | None,
    channels: str | None,
    quiet_hours: str | None,
    sms_consent: str | None,
    full_text: bool = False,
    region: str = "US",
    language: str | None = None,
    both_channels: bool = False,
) -> Partner:
    name = validation.name(name, "partner name")
    if any(p.name_key == name_key(name) for p in couple.partners):
        raise Conflict(f"partner name: {couple.name!r} already has a partner called {name!r}")
    if len(couple.partners) >= 2:
        raise Conflict(f"couple {couple.name!r} already has two partners")
    partner = Partner(
        couple_id=couple.id,
        name=name,
        phone=validation.phone(phone, region) if phone else None,
        email=validation.email(email) if email else None,
        timezone=validation.timezone(timezone) if timezone else couple.timezone,
        language=language_code(language) if language else i18n.DEFAULT,
        full_text=full_text,
        both_channels=both_channels,
        sms_consent=ConsentState.UNKNOWN,
        unsubscribe_generation=1,
        created_at=now,
        updated_at=now,
    )
    if channels is None:
        chosen = [c for c, v in ((Channel.SMS, partner.phone), (Channel.EMAIL, partner.email)) if v]
    else:
        chosen = validation.channels(channels)
    partner.channels = ",".join(chosen)
    _check_channels(partner)
    if quiet_hours:
        qh = validation.quiet_hours(quiet_hours)
        partner.quiet_start, partner.quiet_end = qh if qh else (None, None)
    session.add(partner)
    session.flush()
    if sms_consent is not None:
        _admin_consent(session, now, partner, sms_consent)
    request_confirmation(session, now, partner)
    couple.touch(now)
    record(session, EventType.PARTNER_ADDED, now, couple.id, partner_id=partner.id)
    return partner


def _admin_consent(session: Session, now: datetime, partner: Partner, source: str) -> None:
    """Consent an admin records (a signup form, a call): for a number that has not said STOP."""
    if not partner.phone:
        raise InvalidInput("sms consent", "recorded without a phone number", "add --phone")
    if partner.sms_consent is ConsentState.OPTED_OUT:
        # Only the person can undo their STOP (by texting START), not an admin's note.
        raise Conflict(
            f"sms consent: {partner.name} opted out by text; "
            "only START from their phone opts them back in"
        )
    set_consent(session, now, partner, ConsentState.CONSENTED, consent_source(source))


def request_confirmation(session: Session, now: datetime, partner: Partner) -> bool:
    """Double opt-in: a number with no consent yet gets the one confirmation text (and is
    pending until YES); a number that said STOP gets nothing. True if one was queued."""
    if not partner.phone or partner.sms_consent is not ConsentState.UNKNOWN:
        return False
    if Channel.SMS not in partner.channel_list:
        return False
    if optin.said_stop(session, partner.phone):
        set_consent(session, now, partner, ConsentState.OPTED_OUT, "number opted out before")
        return False
    set_consent(session, now, partner, ConsentState.PENDING, "confirmation sent")
    optin.queue_confirmation(session, now, partner)
    return True


def consent_source(text: str, field: str = "sms consent") -> str:
    text = " ".join(text.split())
    if not text or len(text) > 60:
        raise InvalidInput(field, "source must be 1-60 characters", "e.g. 'signup form'")
    return text


def edit(
    session: Session,
    now: datetime,
    partner: Partner,
    *,
    name: str | None = None,
    phone: str | None = None,
    email: str | None = None,
    timezone: str | None = None,
    channels: str | None = None,
    quiet_hours: str | None = None,
    sms_consent: str | None = None,
    full_text: bool | None = None,
    region: str = "US",
    language: str | None = None,
    both_channels: bool | None = None,
) -> Partner:
    changed: list[str] = []
    if name is not None:
        new = validation.name(name, "partner name")
        if any(p.name_key == name_key(new) and p.id != partner.id for p in partner.couple.partners):
            raise Conflict(f"partner name: {new!r} is already used in this couple")
        partner.name = new
        changed.append("name")
    if phone is not None:
        new_phone = validation.phone(phone, region) if phone else None
        renumbered = new_phone != partner.phone
        partner.phone = new_phone
        if renumbered and partner.sms_consent is not ConsentState.UNKNOWN:
            # Consent belongs to a number: a new number starts without it.
            set_consent(session, now, partner, ConsentState.UNKNOWN, "phone changed")
        changed.append("phone")
    if email is not None:
        new_email = validation.email(email) if email else None
        if new_email != partner.email:
            # Links sent to the old address must not unsubscribe the new one.
            partner.unsubscribe_generation += 1
        partner.email = new_email
        changed.append("email")
    if timezone is not None:
        partner.timezone = validation.timezone(timezone)
        changed.append("timezone")
    if language is not None:
        partner.language = language_code(language)
        changed.append("language")
    if channels is not None:
        partner.channels = ",".join(validation.channels(channels))
        changed.append("channels")
    if quiet_hours is not None:
        qh = validation.quiet_hours(quiet_hours)
        partner.quiet_start, partner.quiet_end = qh if qh else (None, None)
        changed.append("quiet_hours")
    if full_text is not None:
        partner.full_text = full_text
        changed.append("full_text")
    if both_channels is not None:
        partner.both_channels = both_channels
        changed.append("both_channels")
    if not changed and sms_consent is None:
        raise InvalidInput("partner edit", "nothing to change", "see hearth partner edit --help")
    _check_channels(partner)
    partner.updated_at = now
    session.flush()
    if sms_consent is not None:
        _admin_consent(session, now, partner, sms_consent)
    if {"phone", "channels"} & set(changed):
        request_confirmation(session, now, partner)
    partner.couple.touch(now)
    record(
        session,
        EventType.PARTNER_CHANGED,
        now,
        partner.couple_id,
        partner_id=partner.id,
        fields=changed,
    )
    return partner


def remove(session: Session, now: datetime, partner: Partner) -> None:
    if session.get_bind().dialect.name == "sqlite":  # as couples.erase_on_delete
        session.execute(sa.text("PRAGMA secure_delete=ON"))
    couple = partner.couple
    partner_id = partner.id
    couple.partners.remove(partner)
    session.delete(partner)
    session.flush()
    couple.touch(now)
    record(session, EventType.PARTNER_REMOVED, now, couple.id, partner_id=partner_id)


def list_for(session: Session, couple: Couple | None) -> list[Partner]:
    stmt = sa.select(Partner).order_by(Partner.couple_id, Partner.id)
    if couple is not None:
        stmt = stmt.where(Partner.couple_id == couple.id)
    return list(session.scalars(stmt))


def consent_history(session: Session, partner: Partner) -> list[ConsentRecord]:
    stmt = (
        sa.select(ConsentRecord)
        .where(ConsentRecord.partner_id == partner.id)
        .order_by(ConsentRecord.at, ConsentRecord.id)
    )
    return list(session.scalars(stmt))


def quiet(partner: Partner) -> tuple[time, time] | None:
    if partner.quiet_start is None or partner.quiet_end is None:
        return None
    return partner.quiet_start, partner.quiet_end


def format_quiet(partner: Partner) -> str:
    q = quiet(partner)
    return f"{q[0]:%H:%M}-{q[1]:%H:%M}" if q else "off"
