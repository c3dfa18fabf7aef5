"""Domain events: appended in the same transaction as the change they describe.

On PostgreSQL each append also sends ``NOTIFY hearth_events`` (delivered at commit), so a
listening daemon wakes at once; on SQLite the daemon polls the table by id.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import Event

CHANNEL = "hearth_events"


class EventType(StrEnum):
    COUPLE_ADDED = "couple.added"
    COUPLE_CHANGED = "couple.changed"
    COUPLE_PAUSED = "couple.paused"
    COUPLE_RESUMED = "couple.resumed"
    COUPLE_REMOVED = "couple.removed"
    PARTNER_ADDED = "partner.added"
    PARTNER_CHANGED = "partner.changed"
    PARTNER_REMOVED = "partner.removed"
    PARTNER_OPTED_OUT = "partner.opted_out"
    PARTNER_OPTED_IN = "partner.opted_in"
    FEED_ISSUED = "feed.issued"
    FEED_ROTATED = "feed.rotated"
    PAGE_ISSUED = "page.issued"
    PAGE_ROTATED = "page.rotated"
    RITUAL_ADDED = "ritual.added"
    RITUAL_CHANGED = "ritual.changed"
    RITUAL_PAUSED = "ritual.paused"
    RITUAL_RESUMED = "ritual.resumed"
    RITUAL_REMOVED = "ritual.removed"
    OCCURRENCE_SKIPPED = "occurrence.skipped"
    OCCURRENCE_MOVED = "occurrence.moved"
    OCCURRENCE_DONE = "occurrence.done"
    ANSWER_GIVEN = "answer.given"  # ids only: the text never leaves the answer row
    ANSWERS_REVEALED = "answers.revealed"
    REMINDER_SENT = "reminder.sent"
    REMINDER_FAILED = "reminder.failed"
    REMINDER_RETRIED = "reminder.retried"
    REPLY_RECEIVED = "reply.received"
    REPAIR_REQUESTED = "repair.requested"
    REPAIR_SCHEDULED = "repair.scheduled"
    REPAIR_NO_SLOT = "repair.no_slot"
    REPAIR_CANCELLED = "repair.cancelled"
    PROMPT_ADDED = "prompt.added"
    PROMPT_DISABLED = "prompt.disabled"
    PROMPT_ENABLED = "prompt.enabled"


# Events after which the couple's reminders must be replanned.
REPLAN_TYPES = frozenset(
    {
        EventType.COUPLE_ADDED,
        EventType.COUPLE_CHANGED,
        EventType.COUPLE_PAUSED,
        EventType.COUPLE_RESUMED,
        EventType.PARTNER_ADDED,
        EventType.PARTNER_CHANGED,
        EventType.PARTNER_REMOVED,
        EventType.PARTNER_OPTED_OUT,
        EventType.PARTNER_OPTED_IN,
        EventType.RITUAL_ADDED,
        EventType.RITUAL_CHANGED,
        EventType.RITUAL_PAUSED,
        EventType.RITUAL_RESUMED,
        EventType.RITUAL_REMOVED,
        EventType.OCCURRENCE_SKIPPED,
        EventType.OCCURRENCE_MOVED,
        EventType.REPAIR_SCHEDULED,
        EventType.REPAIR_CANCELLED,
    }
)


def record(
    session: Session,
    type_: EventType | str,
    now: datetime,
    couple_id: int | None = None,
    **payload: Any,
) -> Event:
    ev = Event(couple_id=couple_id, type=str(type_), payload=payload, created_at=now)
    session.add(ev)
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_notify(CHANNEL, str(ev.id))))
    return ev
