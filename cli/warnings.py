"""Warnings the commands that change when or to whom nudges go print: a partner whose
reminders fall in their quiet hours is told about, one line each (docs/delivery.md)."""

from __future__ import annotations

from datetime import datetime, timedelta

import click
from sqlalchemy.orm import Session

from service.db.context import Hearth
from service.db.models import Couple, Ritual
from service.domain import reach
from service.outbox import capacity as forecasting


def quiet(
    hearth: Hearth,
    session: Session,
    now: datetime,
    *,
    couple: Couple | None = None,
    ritual: Ritual | None = None,
    partner_id: int | None = None,
) -> list[reach.QuietNote]:
    """The quiet-hours notes for ``ritual`` (or every ritual of ``couple``), only those of
    ``partner_id`` when given."""
    session.flush()
    cfg = hearth.settings.daemon
    early = timedelta(hours=cfg.quiet_early_hours)
    if ritual is not None:
        session.refresh(ritual.couple)
        notes = reach.quiet_notes(ritual, now, early, cfg.stale_after_minutes)
    else:
        assert couple is not None
        session.refresh(couple)
        notes = reach.couple_notes(couple, now, early, cfg.stale_after_minutes)
    return [n for n in notes if partner_id is None or n.partner_id == partner_id]


def echo(notes: list[reach.QuietNote]) -> None:
    for n in notes:
        click.echo(n.line)


def capacity(hearth: Hearth, session: Session, now: datetime, ritual: Ritual) -> list[str]:
    """A line when ``ritual``'s nudges fall in a minute the forecast puts over a sender pool's
    capacity (the change counted: the session is flushed first)."""
    session.flush()
    f = forecasting.forecast(session.connection(), now, hearth.settings)
    hit = [(name, p) for name, p in f.over() if ritual.id in p.ritual_ids]
    if not hit:
        return []
    name, p = hit[0]
    more = f" (and {len(hit) - 1} more minute(s))" if len(hit) > 1 else ""
    return [
        f"warning: {ritual.title!r} has nudges in a minute over the {name} pool's capacity: "
        f"{p.minute:%a %Y-%m-%d %H:%M} UTC, {p.due} due at {p.capacity_per_minute:g}/min, the "
        f"last out {p.worst_late_seconds:.0f} s late, {p.expired} would expire{more}; see "
        "`hearth capacity` and docs/operations.md"
    ]
