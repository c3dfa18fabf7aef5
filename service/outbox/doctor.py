"""``hearth doctor``: every partner who will not get a ritual's nudges, and why.

Three causes repeat until someone acts: no channel reaches the partner (no number, no
consent, STOP, unsubscribed), the ritual's reminders fall in their quiet hours too far from
either edge to be moved (see docs/delivery.md), or the provider refused the partner's last
reminder on a channel for good (an invalid number, a landline). Besides those, it says when
no encryption key is set: nudges still go out, but partners' words cannot be kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.core import reasons
from service.core.config import EncryptionSettings
from service.core.crypto import others_can_read
from service.db.models import Couple, Partner, Reminder, Ritual
from service.domain import reach, routing


@dataclass(frozen=True)
class Finding:
    couple_id: int
    couple: str
    ritual_id: int
    ritual: str
    partner_id: int
    partner: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


NO_KEY = (
    "no encryption key is set ([encryption] key_file or keys): partners' answers and replies"
    " are not kept, so the shared question is asked of nobody; `hearth init` writes a key file"
    " (docs/configuration.md)"
)


def encryption_problem(enc: EncryptionSettings) -> str | None:
    """One line when the keys that seal partners' words are missing or exposed."""
    if not enc.keyring.configured:
        return NO_KEY
    if enc.key_file and others_can_read(Path(enc.key_file)):
        return f"the encryption key file {enc.key_file} is readable by every user: chmod 600 it"
    return None


def findings(
    session: Session,
    now: datetime,
    *,
    early: timedelta,
    stale_minutes: float,
    couple: Couple | None = None,
) -> list[Finding]:
    stmt = sa.select(Couple).order_by(Couple.id)
    if couple is not None:
        stmt = stmt.where(Couple.id == couple.id)
    out: list[Finding] = []
    for c in session.scalars(stmt):
        refused = {p.id: _refused(session, p) for p in c.partners}
        for r in sorted(c.rituals, key=lambda r: r.id):
            if r.ended_at is not None:
                continue
            lost = {
                n.partner_id: n.line.removeprefix("warning: ")
                for n in reach.quiet_notes(r, now, early, stale_minutes)
                if not n.delivered
            }
            for p in sorted(c.partners, key=lambda p: p.id):
                why = reach.unreachable(p, r) + refused[p.id]
                if p.id in lost:
                    why.append(lost[p.id])
                out.extend(_finding(c, r, p, w) for w in why)
    return out


def routes(session: Session, found: list[Finding]) -> dict[tuple[int, int], str]:
    """The route (service/domain/routing.py) of each finding's partner for its ritual."""
    out = {}
    for f in found:
        p, r = session.get(Partner, f.partner_id), session.get(Ritual, f.ritual_id)
        assert p is not None
        out[f.partner_id, f.ritual_id] = routing.describe(p, r)
    return out


def _finding(c: Couple, r: Ritual, p: Partner, why: str) -> Finding:
    return Finding(c.id, c.name, r.id, r.title, p.id, p.name, why)


def _refused(session: Session, p: Partner) -> list[str]:
    """A channel whose last finished reminder the provider refused for good."""
    why = []
    for ch in p.channel_list:
        last = session.execute(
            sa.select(Reminder.state, Reminder.last_error)
            .where(
                Reminder.partner_id == p.id,
                Reminder.channel == ch,
                Reminder.final_at.is_not(None),
            )
            .order_by(Reminder.final_at.desc(), Reminder.id.desc())
            .limit(1)
        ).first()
        if last is not None and reasons.label(last.state.value, last.last_error) == "refused":
            why.append(f"{ch.value}: the last reminder was refused ({last.last_error})")
    return why
