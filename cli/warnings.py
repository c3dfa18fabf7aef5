"""Warnings the commands that change when or to whom nudges go print: a partner whose
reminders fall in their quiet hours is told about, one line each (docs/delivery.md)."""

from __future__ import annotations

from datetime import datetime, timedelta

import click
from sqlalchemy.orm import Session

from service.db.context import Hearth
from service.db.models import Couple, Ritual
from service.domain import reach


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
