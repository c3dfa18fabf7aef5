"""Couples: add, find, edit, pause, remove. Every write records a domain event."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.core.exceptions import Conflict, InvalidInput, NotFound
from service.core.text import as_id, name_key
from service.db.delivery_stats import count_into_stats
from service.db.models import Couple, Reminder
from service.domain import validation
from service.domain.events import EventType, record
from service.domain.pauses import settle_couple


def resolve(session: Session, ref: str | int) -> Couple:
    """A couple by id or by its name (matched as service/core/text.py:name_key says)."""
    text = str(ref).strip()
    couple_id = as_id(text)
    if couple_id is not None:
        couple = session.get(Couple, couple_id)
    else:  # name_key is unique: one couple or none
        couple = session.scalar(sa.select(Couple).where(Couple.name_key == name_key(text)))
    if couple is None:
        raise NotFound("couple", ref)
    return couple


def add(session: Session, now: datetime, *, name: str, timezone: str) -> Couple:
    name = validation.name(name, "couple name")
    tz = validation.timezone(timezone)
    exists = session.scalar(sa.select(Couple.id).where(Couple.name_key == name_key(name)))
    if exists:
        raise Conflict(f"couple name: {name!r} is already taken (couple {exists})")
    couple = Couple(name=name, timezone=tz, created_at=now, updated_at=now, change_stamp=1)
    session.add(couple)
    session.flush()
    record(session, EventType.COUPLE_ADDED, now, couple.id)
    return couple


def list_all(session: Session) -> list[Couple]:
    return list(session.scalars(sa.select(Couple).order_by(Couple.id)))


def edit(
    session: Session, now: datetime, couple: Couple, *, name: str | None, timezone: str | None
) -> Couple:
    changed: list[str] = []
    if name is not None:
        new = validation.name(name, "couple name")
        clash = session.scalar(
            sa.select(Couple.id).where(Couple.name_key == name_key(new), Couple.id != couple.id)
        )
        if clash:
            raise Conflict(f"couple name: {new!r} is already taken (couple {clash})")
        couple.name = new
        changed.append("name")
    if timezone is not None:
        couple.timezone = validation.timezone(timezone)
        changed.append("timezone")
    if not changed:
        raise InvalidInput("couple edit", "nothing to change", "give --name or --timezone")
    couple.touch(now)
    record(session, EventType.COUPLE_CHANGED, now, couple.id, fields=changed)
    return couple


def pause(session: Session, now: datetime, couple: Couple, until: datetime | None) -> Couple:
    if until is not None and until <= now:
        raise InvalidInput("until", "is in the past", "give a future date")
    if couple.paused_at is not None:  # a pause that ran out: keep it before it is replaced
        settle_couple(couple, couple.paused_until or now, now)
    couple.paused_at = now
    couple.paused_until = until
    couple.touch(now)
    record(
        session,
        EventType.COUPLE_PAUSED,
        now,
        couple.id,
        until=until.isoformat() if until else None,
    )
    return couple


def resume(session: Session, now: datetime, couple: Couple) -> Couple:
    if not couple.is_paused(now):
        raise Conflict(f"couple {couple.name!r} is not paused")
    settle_couple(couple, now, now)
    couple.paused_at = None
    couple.paused_until = None
    couple.touch(now)
    record(session, EventType.COUPLE_RESUMED, now, couple.id)
    return couple


def erase_on_delete(session: Session) -> None:
    """On SQLite, deleted rows are overwritten with zeros rather than left in free pages
    (PRAGMA secure_delete; for this connection, on from here). The write-ahead log keeps
    older copies of the pages until a checkpoint: Database.erase_traces after the commit."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(sa.text("PRAGMA secure_delete=ON"))


def remove(session: Session, now: datetime, couple: Couple) -> None:
    """Delete the couple and, by cascade, its partners' personal data, rituals, reminders and
    replies. Events keep only ids (no personal data) for the audit trail."""
    couple_id, partner_count = couple.id, len(couple.partners)
    erase_on_delete(session)
    # Keep the anonymous delivery counts; everything else about the couple goes.
    count_into_stats(session.connection(), Reminder.__table__.c.couple_id == couple_id)
    session.delete(couple)
    session.flush()
    record(session, EventType.COUPLE_REMOVED, now, couple_id, partners=partner_count)
