"""Everything stored about one couple, as plain JSON-ready data (the right of access).

Secrets are left out: a feed token is stored only as a hash, which identifies nothing to the
couple, and the unsubscribe token and claim tokens are operational. Everything else a row
holds is included, so the export is a true copy of what Hearth keeps.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.core.crypto import Keyring
from service.db.models import (
    Answer,
    Base,
    CheckIn,
    ConsentRecord,
    Couple,
    Event,
    OccurrenceException,
    Partner,
    Prompt,
    PromptRotation,
    Reminder,
    RepairRequest,
    Reply,
    Ritual,
)

FORMAT = "hearth-export/1"
_SECRET = {
    "feed_token_hash",
    "unsubscribe_token",
    "claim_token",
    "page_token_hash",
    "feed_token_kept",
}
_SEALED = {"body", "text"}  # reply and message bodies, answers (service/core/crypto.py)


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def _row(obj: Base) -> dict[str, Any]:
    return {
        c.key: _plain(getattr(obj, c.key))
        for c in sa.inspect(type(obj)).column_attrs
        if c.key not in _SECRET
    }


def export_couple(
    session: Session, couple: Couple, now: datetime, keys: Keyring | None = None
) -> dict[str, Any]:
    """With ``keys``, what partners wrote (sealed at rest) is exported as they wrote it."""
    pids = [p.id for p in couple.partners]
    rids = list(session.scalars(sa.select(Ritual.id).where(Ritual.couple_id == couple.id)))

    def rows(query: sa.Select[Any]) -> list[dict[str, Any]]:
        found = [_row(o) for o in session.scalars(query)]
        if keys is not None:
            for row in found:
                for key in _SEALED.intersection(row):
                    if isinstance(row[key], str):
                        row[key] = keys.open(row[key])
        return found

    return {
        "format": FORMAT,
        "exported_at": now.isoformat(),
        "couple": _row(couple),
        "partners": rows(sa.select(Partner).where(Partner.id.in_(pids)).order_by(Partner.id)),
        "consent_records": rows(
            sa.select(ConsentRecord)
            .where(ConsentRecord.partner_id.in_(pids))
            .order_by(ConsentRecord.id)
        ),
        "rituals": rows(sa.select(Ritual).where(Ritual.id.in_(rids)).order_by(Ritual.id)),
        "occurrence_exceptions": rows(
            sa.select(OccurrenceException)
            .where(OccurrenceException.ritual_id.in_(rids))
            .order_by(OccurrenceException.id)
        ),
        "check_ins": rows(
            sa.select(CheckIn).where(CheckIn.ritual_id.in_(rids)).order_by(CheckIn.id)
        ),
        "prompt_rotations": rows(
            sa.select(PromptRotation)
            .where(PromptRotation.ritual_id.in_(rids))
            .order_by(PromptRotation.ritual_id)
        ),
        "reminders": rows(
            sa.select(Reminder).where(Reminder.couple_id == couple.id).order_by(Reminder.id)
        ),
        "replies": rows(sa.select(Reply).where(Reply.couple_id == couple.id).order_by(Reply.id)),
        "answers": rows(sa.select(Answer).where(Answer.couple_id == couple.id).order_by(Answer.id)),
        # The questions those answers answer ("our questions" on the page).
        "questions": rows(
            sa.select(Prompt)
            .where(
                Prompt.id.in_(
                    sa.select(Answer.prompt_id).where(
                        Answer.couple_id == couple.id, Answer.prompt_id.is_not(None)
                    )
                )
            )
            .order_by(Prompt.id)
        ),
        "repair_requests": rows(
            sa.select(RepairRequest)
            .where(RepairRequest.couple_id == couple.id)
            .order_by(RepairRequest.id)
        ),
        "events": rows(sa.select(Event).where(Event.couple_id == couple.id).order_by(Event.id)),
    }
