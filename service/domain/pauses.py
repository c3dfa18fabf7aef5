"""Pauses of a couple or a ritual: what a pause covers, and how a finished one is kept.

A pause lives in two columns (``paused_at``, ``paused_until``) that a resume or the next
pause clears; what it covered is then kept as skips (:func:`settle_pause`).
"""

from __future__ import annotations

from datetime import datetime

from service.db.models import Couple, ExceptionKind, OccurrenceException, Ritual
from service.domain.recurrence import occurrences, schedule_of


def in_pause(at: datetime, paused_at: datetime | None, until: datetime | None) -> bool:
    """Whether an occurrence starting ``at`` falls in a pause: the planner's rule, which the
    dispatcher's send-time check applies too."""
    return paused_at is not None and paused_at <= at and (until is None or at < until)


def paused_then(ritual: Ritual, instant: datetime) -> bool:
    """Whether a pause of the ritual or of its couple covers an occurrence starting at
    ``instant``. The planner's rule: what this reports paused gets no nudge."""
    return any(
        in_pause(instant, start, until)
        for start, until in (
            (ritual.paused_at, ritual.paused_until),
            (ritual.couple.paused_at, ritual.couple.paused_until),
        )
    )


def pause_spans(
    couple: Couple, ritual: Ritual, open_end: datetime
) -> list[tuple[datetime, datetime]]:
    """The pauses in force on the couple and the ritual, an open-ended one ending at
    ``open_end``; finished pauses are skips already (:func:`settle_pause`)."""
    return [
        (owner.paused_at, owner.paused_until or open_end)
        for owner in (couple, ritual)
        if owner.paused_at is not None
    ]


def settle_pause(ritual: Ritual, start: datetime, end: datetime, now: datetime) -> int:
    """Turn the occurrences a finished pause covered into skips; returns how many.

    A pause lives in two columns that a resume or the next pause clears, but what it covered
    must stay true: the feed keeps those occurrences out of partners' calendars and the stats
    neither count them kept nor missed. As skips, every reader already honours them. An
    occurrence is judged by its actual start, as the planner decided who got a reminder.
    """
    end = min(end, now)
    settled = 0
    existing = {e.original_start: e for e in ritual.exceptions}  # a long pause has many
    for o in occurrences(schedule_of(ritual), start, end):
        if not start <= o.start < end:
            continue
        exc = existing.get(o.original_start)
        if exc is None:
            exc = OccurrenceException(
                ritual_id=ritual.id, original_start=o.original_start, created_at=now
            )
            ritual.exceptions.append(exc)
        exc.kind, exc.new_start, exc.source = ExceptionKind.SKIP, None, "pause"
        settled += 1
    return settled


def settle_couple(couple: Couple, end: datetime, now: datetime) -> None:
    """The couple's finished pause becomes skips of each ritual (see :func:`settle_pause`)."""
    assert couple.paused_at is not None
    # Removed rituals too: their occurrences up to the removal stay in partners' calendars.
    for ritual in couple.rituals:
        if settle_pause(ritual, couple.paused_at, end, now):
            ritual.version += 1  # calendars see the EXDATEs as a change of the series
            ritual.updated_at = now
