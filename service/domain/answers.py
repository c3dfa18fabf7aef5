"""The shared question's data: who takes part, each partner's answer and mood, mood trends.

A ritual with ``ask`` asks its prompt as a question of every partner: one who chose full
text answers by SMS; a discreet one's lock screen never shows the question, so their text
carries their page link and they answer on the page (service/web/page/); an email partner
answers on the page too. The answer's text is sealed at rest (service/core/crypto.py); the
reply flow lives in service/replies/question.py.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.core.exceptions import InvalidInput
from service.core.timeutil import zone
from service.db.models import (
    Answer,
    Channel,
    Couple,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
    Ritual,
    RitualKind,
)
from service.domain import stats
from service.domain.recurrence import occurrences, schedule_of

ASKING_KINDS = (RitualKind.CHECK_IN, RitualKind.GRATITUDE)  # templates ask by default
MOOD_WEEKS = 8
# An occurrence's question is open at most this long after its start (bounds the query).
OPEN_AT_MOST = timedelta(days=8)


def takes_part(p: Partner) -> bool:
    """Every partner takes part: by text, by email or on their own page (which every
    partner has), so discretion never keeps anyone out of the loop."""
    return True


def by_text(p: Partner) -> bool:
    """Texts with Hearth and chose full text: the question is asked, and the other's answer
    revealed, in the text itself. A discreet partner's lock screen never shows either
    (docs/delivery.md): their text points to their page instead."""
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
class Open:
    """The occurrence whose question is open now: asked (its nudge went out, the prompt
    chosen) and not yet past its grace period."""

    ritual: Ritual
    occurrence: datetime
    prompt_id: int | None


def open_question(
    session: Session, couple: Couple, now: datetime, grace: timedelta | None
) -> Open | None:
    """The couple's latest asked occurrence, if still open (one query, on the reminders'
    couple index; the rituals are the couple's, already loaded)."""
    row = session.execute(
        sa.select(Reminder.ritual_id, Reminder.occurrence_start, Reminder.prompt_id)
        .where(
            Reminder.couple_id == couple.id,
            Reminder.state.in_([ReminderState.SENT, ReminderState.DELIVERED]),
            Reminder.purpose.in_([ReminderPurpose.NUDGE, ReminderPurpose.SNOOZE]),
            Reminder.prompt_id.is_not(None),
            Reminder.occurrence_start > now - OPEN_AT_MOST,
        )
        .order_by(Reminder.occurrence_start.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    ritual = session.get(Ritual, row.ritual_id)
    if ritual is None or ritual.couple_id != couple.id or not asks(ritual):
        return None
    if now >= _closes(ritual, row.occurrence_start, grace):
        return None
    return Open(ritual, row.occurrence_start, row.prompt_id)


def _closes(ritual: Ritual, occ: datetime, grace: timedelta | None) -> datetime:
    """:func:`stats.grace_end`, looking only as far ahead as a question can be open: a page
    view expands a week of the schedule, not the 400 days that function reads."""
    schedule = schedule_of(ritual)
    start = schedule.moves.get(occ, occ)
    later = occurrences(schedule, start + timedelta(seconds=1), start + OPEN_AT_MOST)
    if not later:
        return min(stats.grace_end(ritual, occ, grace), start + OPEN_AT_MOST)
    return min(later[0].start, start + grace) if grace else later[0].start


def forget(
    session: Session, now: datetime, partner: Partner, ritual_id: int, occ: datetime
) -> None:
    """The partner's own answer forgotten: its text gone for good (the row keeps the mood
    and that it was answered, for the streaks); the other's answer stays."""
    row = get(session, ritual_id, occ, partner.id)
    if row is None or row.text is None:
        raise InvalidInput("answer", "there is no answer of yours to forget")
    row.text = None
    partner.updated_at = now  # the page's cache key (service/web/page/view.py)


@dataclass(frozen=True, slots=True)
class Shared:
    """One revealed occurrence: the question and every partner's answer (None: forgotten)."""

    ritual_id: int
    occurrence: datetime
    prompt_id: int | None
    answers: dict[int, str | None]  # partner id -> sealed text


def shared(session: Session, couple: Couple, page: int, size: int) -> tuple[list[Shared], bool]:
    """The couple's revealed occurrences, newest first, ``size`` per page (1-based), and
    whether older ones follow. Never an answer before its reveal. Two queries."""
    occ = (
        sa.select(Answer.ritual_id, Answer.occurrence_start)
        .where(Answer.couple_id == couple.id, Answer.revealed_at.is_not(None))
        .group_by(Answer.ritual_id, Answer.occurrence_start)
        .order_by(Answer.occurrence_start.desc(), Answer.ritual_id.desc())
        .limit(size + 1)
        .offset((page - 1) * size)
    )
    keys = [(r, o) for r, o in session.execute(occ)]
    more = len(keys) > size
    keys = keys[:size]
    if not keys:
        return [], more
    rows = session.scalars(
        sa.select(Answer).where(
            Answer.couple_id == couple.id,
            Answer.revealed_at.is_not(None),
            Answer.occurrence_start.in_({o for _, o in keys}),
        )
    ).all()
    out = []
    for rid, start in keys:
        mine = [a for a in rows if a.ritual_id == rid and a.occurrence_start == start]
        prompt = next((a.prompt_id for a in mine if a.prompt_id is not None), None)
        out.append(Shared(rid, start, prompt, {a.partner_id: a.text for a in mine}))
    return out, more


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
