"""Which domain events the daemon has handled: none missed, none handled late.

The daemon keeps a watermark, the event id up to which every event has been handled, in the
``daemon_state`` row ``events``. A daemon that starts replays the events after it, so an edit
made while no daemon ran (a new time, a moved occurrence) is replanned before anything is
sent, instead of being passed over because it is older than the newest id. Reactions are
idempotent, so handling a few events twice after a crash is harmless.

PostgreSQL gives an event its id when the row is inserted but shows the row only at commit,
so a transaction holding id 10 can commit after one holding id 11: a reader that has seen 11
and asks for ``id > 11`` never sees 10. The cursor therefore reads the ids above the highest
it has looked at and, besides, the ids missing below it, each taken for a transaction still
open. Only after :data:`LAG_SECONDS` does it count a gap as an insert that was rolled back (a
sequence never hands a value out twice) and move the watermark past it. New events are
handled at once either way: the lag holds back only the watermark, and with it how much a
restart replays. (On SQLite, one writer, ids become visible in order; a gap there is a
rollback, and a later event may reuse the id, which is then read like any other.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from service.db import upsert
from service.db.models import DaemonState, Event, table

NAME = "events"
# Longer than any transaction that records an event stays open (a CLI write, a webhook, a
# reaction: well under a second). Generous costs little: events of the last minute are read
# again on each poll, and a restart replays them once more.
LAG_SECONDS = 60.0

_S = table(DaemonState)
_E = table(Event)


class EventCursor:
    """The events not handled yet, read again from the watermark each time (see above).
    Not thread-safe: the daemon calls it under its events lock."""

    def __init__(self, monotonic: Callable[[], float], lag: float = LAG_SECONDS) -> None:
        self.floor = 0  # every event with an id up to here is handled
        self.lag = lag
        self._monotonic = monotonic
        self._seen: set[int] = set()  # handled ids above the floor
        self._gaps: dict[int, float] = {}  # missing id -> when first missed (monotonic)
        self._scanned = 0  # ids up to here have been looked at for gaps
        self._anchored = False  # the floor is known (see load)
        self._saved: int | None = None

    def load(self, conn: Connection, now: datetime, replay: timedelta) -> int:
        """Start at the stored watermark. Without one (the first start after the upgrade
        that added it) replay the events of the last ``replay``: an edit older than the
        planning horizon can no longer change a reminder that is still to be sent. With no
        older event either, start just below the oldest there is: the ids a sequence handed
        out before it (events long pruned, a restored database) are not gaps to wait for."""
        stored = conn.scalar(sa.select(_S.c.value).where(_S.c.name == NAME))
        start = stored
        if start is None:
            start = conn.scalar(
                sa.select(sa.func.max(_E.c.id)).where(_E.c.created_at < now - replay)
            )
        if start is None:
            start = conn.scalar(sa.select(sa.func.coalesce(sa.func.min(_E.c.id) - 1, 0)))
        self.floor = self._scanned = int(start or 0)
        # With no event at all yet, the first batch seen sets the floor just below itself,
        # for the same reason: the ids handed out before it are not gaps either.
        self._anchored = self.floor > 0
        self._saved = stored
        self._seen.clear()
        self._gaps.clear()
        return self.floor

    def fetch(self, session: Session, limit: int = 1000) -> list[Event]:
        """Up to ``limit`` events not handled yet, in id order: those above every id looked
        at, and the missing ids still waited for. (Not a re-read from the watermark: with a
        gap held open for a minute, that would read every handled event again on each poll.)"""
        newer = Event.id > self._scanned
        cond = sa.or_(newer, Event.id.in_(list(self._gaps))) if self._gaps else newer
        stmt = sa.select(Event).where(cond).order_by(Event.id).limit(limit)
        return [e for e in session.scalars(stmt) if e.id not in self._seen]

    def handled(self, ids: Iterable[int]) -> None:
        """Mark events handled and move the watermark up to the lowest gap still waited for
        (call it on every poll, with no ids too: that is how a gap's wait runs out)."""
        now = self._monotonic()
        ids = list(ids)
        if not self._anchored and ids:
            self.floor = self._scanned = min(ids) - 1
            self._anchored = True
        for i in ids:
            self._seen.add(i)
            self._gaps.pop(i, None)
        top = max(self._seen, default=self.floor)
        for i in range(max(self._scanned, self.floor) + 1, top):
            if i not in self._seen:
                self._gaps.setdefault(i, now)
        self._scanned = max(self._scanned, top)
        waiting = [i for i, since in self._gaps.items() if now - since < self.lag]
        floor = min(waiting) - 1 if waiting else top
        if floor > self.floor:
            self.floor = floor
            self._seen = {i for i in self._seen if i > floor}
            self._gaps = {i: t for i, t in self._gaps.items() if i > floor}

    @property
    def waiting(self) -> list[int]:
        """Missing ids the watermark waits for (a transaction still open, or rolled back)."""
        return sorted(self._gaps)

    def save(self, conn: Connection, now: datetime) -> bool:
        """Store the watermark if it moved. Several daemons share the row; it only ever
        moves up (one daemon's replan is every daemon's: the reminders are shared)."""
        if self._saved == self.floor:
            return False
        stmt = upsert.insert(conn, _S).values(name=NAME, at=now, value=self.floor)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_S.c.name],
            set_={"at": stmt.excluded.at, "value": stmt.excluded.value},
            where=sa.or_(_S.c.value.is_(None), _S.c.value < stmt.excluded.value),
        )
        conn.execute(stmt)
        self._saved = self.floor
        return True
