"""Load leveling: each nudge's send slot, so a sender pool never gets more than its rate.

Rituals bunch on round local times; a pool (an SMS sender, a mail relay) sends at a fixed
rate. A nudge may leave a little early, within a window that fits its kind
(:meth:`DeliverySettings.early_window`), never late by choice: slots are given latest-due
first, each as late as its due time and the pool's rate allow (so nothing goes earlier than
the load needs), and a nudge whose window is already full keeps the start of its window and
queues (then it is late by as little as the rate allows). :func:`assign` is pure and
deterministic (ties broken by the nudge's natural key), so every worker that runs it on the
same outbox writes the same slots; :func:`simulate` predicts what the pool then sends when,
which is the forecast (service/outbox/capacity.py) of the same algorithm.

:func:`level` applies it to the outbox: scheduled first-attempt nudges in the horizon get
``next_attempt_at`` = their slot (``due_at`` stays the real time, which the text names);
retries, deferrals, notices and standbys keep theirs and count as load where they stand.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from service.core.sections import DeliverySettings
from service.core.timeutil import in_quiet_hours, quiet_hours_end, zone
from service.db.models import Partner, Reminder, ReminderPurpose, ReminderState, table

_T = table(Reminder)


@dataclass(frozen=True, slots=True)
class Item:
    """One message a pool must send: ``due`` and ``earliest`` in epoch seconds."""

    key: tuple[Any, ...]  # the natural key: ties break on it, never on insert order
    due: float
    earliest: float  # == due: not movable
    expires: float


def rates(settings: Any) -> dict[str, float]:
    """Messages a second each pool sends: the SMS sender pool (one segment a nudge), the
    mail relay."""
    return {
        "sms": settings.twilio.pool_rate_per_second,
        "email": settings.smtp.messages_per_minute / 60.0,
    }


def assign(items: Sequence[Item], rate: float, now: float) -> list[float]:
    """The send slot of each item (same order), for a pool sending ``rate`` a second."""
    gap = 1.0 / rate
    slots = [0.0] * len(items)
    order = sorted(range(len(items)), key=lambda i: (-items[i].due, items[i].key))
    free = math.inf  # the latest instant not yet given, walking back from the last due
    for i in order:
        it = items[i]
        lo = max(it.earliest, now)
        t = min(it.due, free)
        if t < lo:  # its window is full: it joins the queue at the window's start
            slots[i] = lo
            continue
        slots[i] = t
        free = t - gap
    return slots


@dataclass(frozen=True, slots=True)
class Sent:
    slot: float
    at: float  # when the pool gets to it
    late: float  # seconds after its due time (0 when on time or early)
    expired: bool


def simulate(items: Sequence[Item], slots: Sequence[float], rate: float) -> list[Sent]:
    """What a pool sending ``rate`` a second does with ``items`` at ``slots``: first slot
    first (then earliest due, then key), one every 1/rate seconds (same order as items)."""
    gap = 1.0 / rate
    out: list[Sent | None] = [None] * len(items)
    free = -math.inf
    for i in sorted(range(len(items)), key=lambda i: (slots[i], items[i].due, items[i].key)):
        it = items[i]
        at = max(slots[i], free)
        expired = at >= it.expires
        if not expired:
            free = at + gap  # an expired one is dropped at the gate: it takes no turn
        out[i] = Sent(slots[i], at, max(0.0, at - it.due), expired)
    return [s for s in out if s is not None]


def window_start(due: datetime, window: timedelta, quiet: tuple[Any, Any, Any] | None) -> datetime:
    """The earliest a nudge due at ``due`` may leave: ``window`` before, but never inside its
    partner's quiet hours (``quiet``: zone, start, end)."""
    start = due - window
    if quiet is not None and window and in_quiet_hours(start, *quiet):
        start = min(due, quiet_hours_end(start, *quiet))
    return start


def _epoch(t: datetime) -> float:
    return t.timestamp()


# After a replan, only the stretches around the couple's nudges are leveled again (a busy
# minute reaches at most max_early_minutes back, its queue forward): the full pass after
# every planning pass corrects anything longer.
AROUND = timedelta(hours=1)


def _windows(conn: Connection, now: datetime, horizon: timedelta, couple_ids: Sequence[int]) -> Any:
    """A condition on ``due_at``: within AROUND of a scheduled nudge of these couples."""
    dues = sorted(
        conn.scalars(
            sa.select(_T.c.due_at)
            .where(
                _T.c.couple_id.in_(couple_ids),
                _T.c.state == ReminderState.SCHEDULED,
                _T.c.due_at < now + horizon,
            )
            .distinct()
        )
    )
    spans: list[list[datetime]] = []
    for due in dues:
        if spans and due - AROUND <= spans[-1][1]:
            spans[-1][1] = due + AROUND
        else:
            spans.append([due - AROUND, due + AROUND])
    if not spans:
        return sa.false()
    return sa.or_(*(_T.c.due_at.between(lo, hi) for lo, hi in spans))


def level(
    conn: Connection,
    now: datetime,
    settings: Any,
    horizon: timedelta,
    couple_ids: Sequence[int] | None = None,
) -> int:
    """Give every movable nudge due in [now, now + horizon) its slot (only those near the
    nudges of ``couple_ids``, after their replan); returns how many rows moved. Runs in the
    caller's transaction."""
    delivery: DeliverySettings = settings.delivery
    p = table(Partner)
    near = sa.true() if couple_ids is None else _windows(conn, now, horizon, couple_ids)
    rows = conn.execute(
        sa.select(
            _T.c.id,
            _T.c.channel,
            _T.c.purpose,
            _T.c.due_at,
            _T.c.next_attempt_at,
            _T.c.expires_at,
            _T.c.attempts,
            _T.c.standby,
            _T.c.last_error,
            _T.c.ritual_id,
            _T.c.occurrence_start,
            _T.c.partner_id,
            _T.c.offset_minutes,
            p.c.timezone,
            p.c.quiet_start,
            p.c.quiet_end,
        )
        .join(p, p.c.id == _T.c.partner_id)
        .where(
            _T.c.state == ReminderState.SCHEDULED,
            _T.c.next_attempt_at < now + horizon,
            _T.c.due_at < now + horizon + timedelta(minutes=delivery.max_early_minutes),
            near,
        )
    ).all()
    pools: dict[str, list[tuple[Item, Any, bool]]] = defaultdict(list)
    zones: dict[str, Any] = {}
    for r in rows:
        if r.standby:
            continue  # sent only if its preferred channel could not: not load
        movable = (
            r.purpose == ReminderPurpose.NUDGE
            and r.attempts == 0
            and r.last_error is None
            and r.next_attempt_at <= r.due_at
            and r.due_at > now
        )
        key = (r.ritual_id or 0, _epoch(r.occurrence_start), r.partner_id, r.offset_minutes, r.id)
        if movable:
            quiet = None
            if r.quiet_start is not None and r.quiet_end is not None:
                tz = zones.get(r.timezone) or zones.setdefault(r.timezone, zone(r.timezone))
                quiet = (tz, r.quiet_start, r.quiet_end)
            start = window_start(r.due_at, delivery.early_window(r.offset_minutes), quiet)
            item = Item(key, _epoch(r.due_at), _epoch(start), _epoch(r.expires_at))
        else:
            at = _epoch(r.next_attempt_at)
            item = Item(key, at, at, _epoch(r.expires_at))
        pools[str(r.channel)].append((item, r, movable))
    moved = []
    rate_of = rates(settings)
    for channel, entries in pools.items():
        items = [e[0] for e in entries]
        slots = assign(items, rate_of[channel], _epoch(now))
        for (_item, r, movable), slot in zip(entries, slots, strict=True):
            if not movable:
                continue
            when = datetime.fromtimestamp(round(slot, 3), UTC)  # stable across passes
            if when != r.next_attempt_at:
                moved.append({"rid": r.id, "slot": when})
    if moved:
        conn.execute(
            _T.update()
            .where(
                _T.c.id == sa.bindparam("rid"),
                _T.c.state == ReminderState.SCHEDULED,
                _T.c.attempts == 0,
            )
            .values(next_attempt_at=sa.bindparam("slot")),
            moved,
        )
    return len(moved)
