"""Streaks and completion rates: how reliably a couple keeps each ritual.

An occurrence counts as done for the couple when every partner who could report it did so
before its grace period ended: the start of the next occurrence (a one-off has a day), or
``replies.grace_hours`` after the occurrence's start where that is set and comes first. DONE
comes by text, so a partner who could report is one with a phone who had SMS consent at
the occurrence (from the consent history); with no such partner, it is not counted. Occurrences
whose grace period is still running and not yet done are left out (neither kept nor
missed), so a ritual due tonight does not break a streak this afternoon. Skipped
occurrences are not occurrences; while a ritual or its couple is paused, nothing is counted
(a finished pause has become skips of the occurrences it covered).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import Channel, CheckIn, ConsentRecord, ConsentState, Couple, Partner, Ritual
from service.domain.pauses import pause_spans
from service.domain.recurrence import occurrences, schedule_of

WINDOWS = (4, 12)  # weeks
ONE_OFF_GRACE = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Rate:
    done: int
    counted: int

    @property
    def percent(self) -> float | None:
        return round(100 * self.done / self.counted, 1) if self.counted else None


@dataclass(frozen=True, slots=True)
class RitualStats:
    ritual_id: int
    title: str
    rates: dict[int, Rate]  # weeks -> rate
    current_streak: int
    best_streak: int


Span = tuple[datetime, datetime]


def grace_end(ritual: Ritual, original_start: datetime, grace: timedelta | None = None) -> datetime:
    """When the occurrence's grace period for DONE ends (see the module docstring)."""
    s = schedule_of(ritual)
    start = s.moves.get(original_start, original_start)
    later = occurrences(s, start + timedelta(seconds=1), start + timedelta(days=400))
    return _ends(start, later[0].start if later else None, grace)


def _ends(start: datetime, next_start: datetime | None, grace: timedelta | None) -> datetime:
    ends = next_start if next_start is not None else start + ONE_OFF_GRACE
    return min(ends, start + grace) if grace else ends


def _reporters(session: Session, couple: Couple, now: datetime) -> dict[int, list[Span]]:
    """For each partner with a phone, the spans in which they had SMS consent, from the
    consent history: a STOP today does not rewrite who could report last month."""
    partners = session.scalars(
        sa.select(Partner).where(Partner.couple_id == couple.id, Partner.phone.is_not(None))
    ).all()
    spans: dict[int, list[Span]] = {p.id: [] for p in partners}
    opened: dict[int, datetime] = {}
    for rec in session.scalars(
        sa.select(ConsentRecord)
        .where(ConsentRecord.partner_id.in_(spans), ConsentRecord.channel == Channel.SMS)
        .order_by(ConsentRecord.at, ConsentRecord.id)
    ):
        if rec.state is ConsentState.CONSENTED:
            opened.setdefault(rec.partner_id, rec.at)
        elif rec.partner_id in opened:
            spans[rec.partner_id].append((opened.pop(rec.partner_id), rec.at))
    for pid, since in opened.items():
        spans[pid].append((since, now + timedelta(days=400)))
    return spans


def _outcomes(
    ritual: Ritual,
    reporters: dict[int, list[Span]],
    done: dict[datetime, dict[int, datetime]],
    pauses: list[Span],
    now: datetime,
    grace: timedelta | None,
) -> list[tuple[datetime, bool]]:
    """(original start, done) for each occurrence whose outcome is known, oldest first."""
    s = schedule_of(ritual)
    since = ritual.created_at
    # One past ``now`` so the latest occurrence knows when its grace period ends.
    occ = occurrences(s, since, now + timedelta(days=400))
    out = []
    for i, o in enumerate(occ):
        if o.start > now:
            break
        ends = _ends(o.start, occ[i + 1].start if i + 1 < len(occ) else None, grace)
        if any(lo <= o.start < hi for lo, hi in pauses):
            continue
        needed = [
            p for p, spans in reporters.items() if any(lo <= o.start < hi for lo, hi in spans)
        ]
        if not needed:
            continue
        reports = done.get(o.original_start, {})
        kept = all(p in reports and reports[p] < ends for p in needed)
        if kept or ends <= now:
            out.append((o.original_start, kept))
    return out


def _streaks(outcomes: list[tuple[datetime, bool]]) -> tuple[int, int]:
    best = run = 0
    for _, kept in outcomes:
        run = run + 1 if kept else 0
        best = max(best, run)
    return run, best


def outcomes(
    session: Session, couple: Couple, now: datetime, grace: timedelta | None = None
) -> list[tuple[Ritual, list[tuple[datetime, bool]]]]:
    """Each active ritual with (original start, kept) for its occurrences whose outcome is
    known, oldest first. Three queries whatever the number of rituals (the rituals'
    exceptions come with them where the session has them loaded already)."""
    rituals = session.scalars(
        sa.select(Ritual)
        .where(Ritual.couple_id == couple.id, Ritual.ended_at.is_(None))
        .order_by(Ritual.id)
    ).all()
    reporters = _reporters(session, couple, now)
    reports: dict[int, dict[datetime, dict[int, datetime]]] = defaultdict(lambda: defaultdict(dict))
    for c in session.scalars(
        sa.select(CheckIn).where(CheckIn.ritual_id.in_([r.id for r in rituals]))
    ):
        reports[c.ritual_id][c.occurrence_start][c.partner_id] = c.at
    return [
        (r, _outcomes(r, reporters, reports[r.id], pause_spans(couple, r, now), now, grace))
        for r in rituals
    ]


def couple_stats(
    session: Session, couple: Couple, now: datetime, grace: timedelta | None = None
) -> list[RitualStats]:
    """``grace``: ``replies.grace_hours`` (``None``: until the next occurrence)."""
    out = []
    for r, known in outcomes(session, couple, now, grace):
        rates = {}
        for weeks in WINDOWS:
            since = now - timedelta(weeks=weeks)
            window = [kept for start, kept in known if start >= since]
            rates[weeks] = Rate(sum(window), len(window))
        current, best = _streaks(known)
        out.append(RitualStats(r.id, r.title, rates, current, best))
    return out


def streaks(known: list[tuple[datetime, bool]]) -> tuple[int, int]:
    """(current, best) run of kept occurrences."""
    return _streaks(known)
