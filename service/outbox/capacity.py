"""The capacity forecast: what the sender pools will face over the coming days, and how late
the busiest minutes will arrive.

The nudges come from the planner's own rule (:func:`planner.wanted_rows`, so pauses, quiet
hours, routes and staleness are the ones the outbox will hold), their slots and send times
from the leveling algorithm (:mod:`leveling`): the forecast and the outbox share one
algorithm. A standby (a fallback channel's nudge) is not demand: it goes only when its
preferred channel could not deliver. Each SMS nudge counts as one segment (texts are kept to
one where they can be; see docs/operations.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from service.db.models import Couple, table
from service.outbox import leveling, planner
from service.outbox.bulk import COLUMNS

# The busiest minutes shown per pool.
TOP = 5
# A peak whose worst nudge leaves more than this late is over capacity.
ON_TIME = timedelta(seconds=60)
_CH, _DUE, _EXP, _SB = (COLUMNS.index(k) for k in ("channel", "due_at", "expires_at", "standby"))
_PID, _OFF = COLUMNS.index("partner_id"), COLUMNS.index("offset_minutes")
_RID, _OCC = COLUMNS.index("ritual_id"), COLUMNS.index("occurrence_start")


@dataclass(frozen=True)
class Peak:
    """One busy minute of one pool: the nudges due in it, and how they fare."""

    minute: datetime  # UTC, the start of the minute the nudges are due in
    due: int
    capacity_per_minute: float
    latest: datetime  # when the last of them goes out (predicted)
    worst_late_seconds: float
    expired: int
    ritual_ids: frozenset[int] = frozenset()

    @property
    def over(self) -> bool:
        return self.expired > 0 or self.worst_late_seconds > ON_TIME.total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "minute": self.minute.isoformat(),
            "due": self.due,
            "capacity_per_minute": round(self.capacity_per_minute, 2),
            "latest_send": self.latest.isoformat(timespec="seconds"),
            "worst_late_seconds": round(self.worst_late_seconds, 1),
            "expired": self.expired,
            "over_capacity": self.over,
        }


@dataclass
class PoolForecast:
    pool: str
    rate_per_second: float
    messages: int = 0
    worst_late_seconds: float = 0.0
    expired: int = 0
    earliest_early_seconds: float = 0.0  # the most any nudge leaves ahead of its due time
    peaks: list[Peak] = field(default_factory=list)  # the busiest minutes, busiest first
    over: list[Peak] = field(default_factory=list)  # every minute over capacity, in time order

    def as_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "rate_per_second": self.rate_per_second,
            "capacity_per_minute": round(self.rate_per_second * 60, 2),
            "messages": self.messages,
            "worst_late_seconds": round(self.worst_late_seconds, 1),
            "expired": self.expired,
            "earliest_early_seconds": round(self.earliest_early_seconds, 1),
            "peaks": [p.as_dict() for p in self.peaks],
            "over_capacity": [p.as_dict() for p in self.over],
        }


@dataclass
class Forecast:
    start: datetime
    end: datetime
    leveled: bool
    pools: dict[str, PoolForecast]

    @property
    def worst_late_seconds(self) -> float:
        return max((p.worst_late_seconds for p in self.pools.values()), default=0.0)

    @property
    def expired(self) -> int:
        return sum(p.expired for p in self.pools.values())

    def over(self) -> list[tuple[str, Peak]]:
        return [(name, pk) for name, p in self.pools.items() for pk in p.over]

    def summary(self) -> str:
        """One line for ``hearth doctor``."""
        days = round((self.end - self.start) / timedelta(days=1))
        over = self.over()
        parts = [
            f"{name}: {p.messages} due, worst {p.worst_late_seconds:.0f} s late"
            for name, p in sorted(self.pools.items())
        ]
        head = f"capacity (next {days} days): " + ("; ".join(parts) or "nothing due")
        if not over:
            return head + "; every peak on time"
        name, first = over[0]
        return (
            f"{head}; {len(over)} minute(s) over capacity, first {name} at "
            f"{first.minute:%a %Y-%m-%d %H:%M} UTC ({first.due} due, {first.expired} would expire)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "leveled": self.leveled,
            "worst_late_seconds": round(self.worst_late_seconds, 1),
            "expired": self.expired,
            "pools": {name: p.as_dict() for name, p in sorted(self.pools.items())},
        }


def demand(
    conn: Connection, now: datetime, days: float, settings: Any
) -> Iterator[tuple[str, leveling.Item, int]]:
    """Every nudge the planner's rule puts in [now, now + days): (pool, item, ritual id)."""
    delivery = settings.delivery
    shape = planner.Shape.of(settings.daemon, delivery)._replace(horizon=timedelta(days=days))
    c = table(Couple)
    last = 0
    while True:
        ids = list(
            conn.scalars(
                sa.select(c.c.id).where(c.c.id > last).order_by(c.c.id).limit(planner.CHUNK_COUPLES)
            )
        )
        if not ids:
            return
        last = ids[-1]
        rituals, partners, pauses = planner._load(conn, ids, now)
        quiet = {
            p.id: (p.tz, p.quiet_start, p.quiet_end)
            for ps in partners.values()
            for p in ps
            if p.quiet_start is not None and p.quiet_end is not None
        }
        rows = planner.wanted_rows(rituals, partners, pauses, now, **shape._asdict())
        for row in rows:
            if row[_SB]:
                continue
            due = row[_DUE]
            start = leveling.window_start(
                due, delivery.early_window(row[_OFF]), quiet.get(row[_PID])
            )
            key = (row[_RID], row[_OCC].timestamp(), row[_PID], row[_OFF], 0)
            item = leveling.Item(key, due.timestamp(), start.timestamp(), row[_EXP].timestamp())
            yield str(row[_CH]), item, row[_RID]


def forecast(
    conn: Connection, now: datetime, settings: Any, days: float = 7, top: int = TOP
) -> Forecast:
    """The forecast of the next ``days`` for the database ``conn`` sees (a transaction's
    uncommitted changes included: an import's dry run, a ritual edit's warning)."""
    by_pool: dict[str, list[tuple[leveling.Item, int]]] = defaultdict(list)
    for pool, item, rid in demand(conn, now, days, settings):
        by_pool[pool].append((item, rid))
    rates = leveling.rates(settings)
    level = settings.delivery.level
    pools: dict[str, PoolForecast] = {}
    for pool in sorted(set(rates) | set(by_pool)):
        entries = by_pool.get(pool, [])
        items = [e[0] for e in entries]
        if not level:
            items = [leveling.Item(i.key, i.due, i.due, i.expires) for i in items]
        result = predict(pool, items, [e[1] for e in entries], rates[pool], now, top)
        pools[pool] = result
    return Forecast(now, now + timedelta(days=days), level, pools)


def predict(
    pool: str,
    items: list[leveling.Item],
    ritual_ids: list[int],
    rate: float,
    now: datetime,
    top: int = TOP,
) -> PoolForecast:
    """Slots by the leveling algorithm, then the pool's sends, per minute of due time."""
    out = PoolForecast(pool, rate, messages=len(items))
    if not items:
        return out
    slots = leveling.assign(items, rate, now.timestamp())
    sent = leveling.simulate(items, slots, rate)
    minutes: dict[int, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        minutes[int(it.due // 60)].append(i)
    peaks = []
    for minute, idx in minutes.items():
        peaks.append(
            Peak(
                minute=datetime.fromtimestamp(minute * 60, UTC),
                due=len(idx),
                capacity_per_minute=rate * 60,
                latest=datetime.fromtimestamp(max(sent[i].at for i in idx), UTC),
                worst_late_seconds=max(sent[i].late for i in idx),
                expired=sum(sent[i].expired for i in idx),
                ritual_ids=frozenset(ritual_ids[i] for i in idx),
            )
        )
    out.worst_late_seconds = max(s.late for s in sent)
    out.expired = sum(s.expired for s in sent)
    out.earliest_early_seconds = max(
        (it.due - s.at for it, s in zip(items, sent, strict=True)), default=0.0
    )
    out.earliest_early_seconds = max(0.0, out.earliest_early_seconds)
    peaks.sort(key=lambda p: (-p.due, p.minute))
    out.peaks = peaks[:top]
    out.over = sorted((p for p in peaks if p.over), key=lambda p: p.minute)
    return out
