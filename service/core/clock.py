"""The only source of "now" in Hearth.

Every component takes a :class:`Clock`; tests hand in a :class:`FakeClock` and move it
forward instead of sleeping or patching ``datetime``.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for leases, pacing, timeouts)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


# Real time, for what only real time can measure (a provider's rate limit, how long a prune
# chunk held the lock, a shutdown's grace period) where no service context is at hand.
SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock that only moves when told to. Thread-safe: the dispatcher's pool reads it."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._mono = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, delta: timedelta | float) -> datetime:
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds
            return self._now

    def set(self, instant: datetime) -> None:
        if instant.tzinfo is None:
            raise ValueError("FakeClock.set needs a timezone-aware instant")
        with self._lock:
            delta = (instant.astimezone(UTC) - self._now).total_seconds()
            if delta < 0:
                raise ValueError("a clock does not go backwards")
            self._now = instant.astimezone(UTC)
            self._mono += delta
