"""The shared question's data: who takes part, each partner's answer and mood, mood trends.

A ritual with ``ask`` asks its prompt as a question when both partners take part by text
(a phone and SMS among their channels): answers come by SMS, so with one partner on email
only there would be nobody to reveal to. The answer's text is sealed at rest
(service/core/crypto.py); the reply flow lives in service/replies/question.py.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.core.timeutil import zone
from service.db.models import Answer, Channel, Couple, Partner, Ritual, RitualKind

ASKING_KINDS = (RitualKind.CHECK_IN, RitualKind.GRATITUDE)  # templates ask by default
MOOD_WEEKS = 8


def takes_part(p: Partner) -> bool:
    """Texts with Hearth and chose full text: the question is a prompt, and a discreet
    partner's lock screen never shows one (docs/delivery.md)."""
    return bool(p.phone) and Channel.SMS in p.channel_list and p.full_text


def asks(ritual: Ritual) -> bool:
    """Whether the ritual's prompt is asked as the shared question."""
    if not ritual.ask or ritual.kind is RitualKind.REPAIR:
        return False
    members = [p for p in ritual.couple.partners if takes_part(p)]
    return len(members) >= 2


def get(session: Session, ritual_id: int, occurrence: datetime, partner_id: int) -> Answer | None:
    return session.scalar(
        sa.select(Answer).where(
            Answer.ritual_id == ritual_id,
            Answer.occurrence_start == occurrence,
            Answer.partner_id == partner_id,
        )
    )


def for_occurrence(session: Session, ritual_id: int, occurrence: datetime) -> list[Answer]:
    return list(
        session.scalars(
            sa.select(Answer)
            .where(Answer.ritual_id == ritual_id, Answer.occurrence_start == occurrence)
            .order_by(Answer.id)
        )
    )


def upsert(
    session: Session, now: datetime, ritual: Ritual, occurrence: datetime, partner: Partner
) -> tuple[Answer, bool]:
    """The partner's row for the occurrence, made if missing; True if it was made."""
    row = get(session, ritual.id, occurrence, partner.id)
    if row is not None:
        return row, False
    row = Answer(
        couple_id=partner.couple_id,
        ritual_id=ritual.id,
        occurrence_start=occurrence,
        partner_id=partner.id,
        text=None,
        mood=None,
        late=False,
        answered_at=now,
    )
    session.add(row)
    session.flush()
    return row, True


@dataclass(frozen=True, slots=True)
class MoodWeek:
    week: date  # the Monday, in the couple's zone
    average: float
    count: int


def mood_trend(
    session: Session,
    couple: Couple,
    now: datetime,
    weeks: int = MOOD_WEEKS,
    ritual_id: int | None = None,
) -> dict[str, list[MoodWeek]]:
    """Per partner (by name), the average mood of each of the last ``weeks`` weeks that
    has one (of one ritual's occurrences if given), oldest first, weeks starting on Monday
    in the couple's home zone."""
    tz = zone(couple.timezone)
    today = now.astimezone(tz).date()
    first = today - timedelta(days=today.weekday(), weeks=weeks - 1)
    names = {p.id: p.name for p in couple.partners}
    buckets: dict[int, dict[date, list[int]]] = {pid: defaultdict(list) for pid in names}
    stmt = sa.select(Answer.partner_id, Answer.occurrence_start, Answer.mood).where(
        Answer.couple_id == couple.id,
        Answer.mood.is_not(None),
        Answer.occurrence_start >= now - timedelta(weeks=weeks + 1),
        Answer.occurrence_start <= now,
    )
    if ritual_id is not None:
        stmt = stmt.where(Answer.ritual_id == ritual_id)
    for pid, start, mood in session.execute(stmt):
        day = start.astimezone(tz).date()
        monday = day - timedelta(days=day.weekday())
        if monday >= first and pid in buckets and mood is not None:
            buckets[pid][monday].append(mood)
    return {
        names[pid]: [
            MoodWeek(week, round(sum(v) / len(v), 2), len(v)) for week, v in sorted(b.items())
        ]
        for pid, b in buckets.items()
    }
