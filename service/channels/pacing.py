"""Send pacing: a token bucket per sender and one per account, and a breaker for the account.

A long code sends about one segment a second, a short code about a hundred; Twilio queues
what exceeds that and fails with 30001 when its queue overflows. Pacing on our side keeps the
queue short, so a burst goes out earliest-due first instead of piling up at the provider.

A 429 with Retry-After is about the whole account, not one message: :class:`Breaker` opens
for that long and every send waits; then one probe goes out, and only when it passes do the
others follow, in the order they came, through the buckets again (no burst at the end).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from service.core.clock import SYSTEM_CLOCK


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up. Thread-safe; ``acquire`` blocks."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        monotonic: Callable[[], float] = SYSTEM_CLOCK.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._monotonic = monotonic
        self._sleep = sleep
        self._stamp = monotonic()
        self._lock = threading.Lock()

    def reserve(self, tokens: float) -> float:
        """Take ``tokens`` (possibly going negative) and return how long to wait for them."""
        with self._lock:
            now = self._monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= tokens
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self, tokens: float = 1.0) -> float:
        """Block until ``tokens`` may be spent; returns the seconds waited. Reservations are
        first come, first served, so callers leave in the order they arrived."""
        wait = self.reserve(tokens)
        if wait > 0:
            self._sleep(wait)
        return wait


class Pacer:
    """Per-sender buckets (created on first use) behind one account-wide bucket."""

    def __init__(
        self,
        sender_rate: float,
        account_rate: float,
        *,
        monotonic: Callable[[], float] = SYSTEM_CLOCK.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sender_rate = sender_rate
        self._kw = {"monotonic": monotonic, "sleep": sleep}
        self._sleep = sleep
        # No saved-up burst: the provider sees the configured rate from the first second.
        self.account = TokenBucket(account_rate, 1.0, **self._kw)  # type: ignore[arg-type]
        self._senders: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def acquire(
        self, sender: str, segments: int = 1, interrupt: threading.Event | None = None
    ) -> float:
        """Reserve in both buckets at the same instant and wait for the later of the two:
        waiting in one and then the other would waste the first one's slot. A set
        ``interrupt`` (the daemon stopping) ends the wait early; the reservation stays spent."""
        with self._lock:
            bucket = self._senders.get(sender)
            if bucket is None:
                bucket = TokenBucket(self._sender_rate, 1.0, **self._kw)  # type: ignore[arg-type]
                self._senders[sender] = bucket
        wait = max(bucket.reserve(segments), self.account.reserve(segments))
        if wait > 0:
            if interrupt is not None:
                interrupt.wait(wait)
            else:
                self._sleep(wait)
        return wait

    def rate(self) -> float:
        """Segments a second one sender gets: its own rate, or the account's if lower."""
        return min(self._sender_rate, self.account.rate)


class Breaker:
    """Closed: sends pass. Open (after :meth:`trip`): every send waits until the time given.
    Half-open (that time passed): one send is let through as the probe; the rest wait for
    its answer (:meth:`passed` closes, :meth:`trip` opens again). A probe that never reports
    (its thread stopped) is replaced after ``probe_timeout`` seconds."""

    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = SYSTEM_CLOCK.monotonic,
        probe_timeout: float = 30.0,
    ) -> None:
        self._monotonic = monotonic
        self._probe_timeout = probe_timeout
        self._cond = threading.Condition()
        self._open_until: float | None = None  # None: closed
        self._probe_since: float | None = None  # a probe is out since then
        self._queue: list[int] = []  # waiting tickets, a heap: first come, first through
        self._tickets = itertools.count()
        self.trips = 0

    @property
    def closed(self) -> bool:
        return self._open_until is None

    def trip(self, seconds: float) -> None:
        with self._cond:
            until = self._monotonic() + max(0.0, seconds)
            self._open_until = max(until, self._open_until or 0.0)
            self._probe_since = None
            self.trips += 1
            self._cond.notify_all()

    def passed(self) -> None:
        """A send got an answer that was not a rate limit: the account is taking sends."""
        if self._open_until is None:
            return  # the common case costs no lock
        with self._cond:
            self._open_until = self._probe_since = None
            self._cond.notify_all()

    def ticket(self) -> int:
        """A send's place in line, taken when it starts pacing (sends start in due order)."""
        return next(self._tickets)

    def wait(self, ticket: int, interrupt: threading.Event | None = None) -> bool:
        """Wait for this send's turn: at once when closed and nobody waits; else after the
        sends with earlier tickets. True when this send goes out as the probe of a half-open
        breaker. A set ``interrupt`` ends the wait."""
        if self._open_until is None and not self._queue:
            return False  # closed and nobody waiting: the common case costs no lock
        with self._cond:
            heapq.heappush(self._queue, ticket)
            try:
                while not (interrupt is not None and interrupt.is_set()):
                    if self._queue[0] == ticket:
                        if self._open_until is None:
                            return False
                        if self._probe_turn():
                            return True
                    self._cond.wait(self._timeout())
                return False
            finally:
                self._queue.remove(ticket)
                heapq.heapify(self._queue)
                self._cond.notify_all()

    def _probe_turn(self) -> bool:
        """Half-open and no probe out (or it never reported): this send is the probe."""
        assert self._open_until is not None
        now = self._monotonic()
        if now < self._open_until:
            return False
        if self._probe_since is None or now - self._probe_since > self._probe_timeout:
            self._probe_since = now
            return True
        return False

    def _timeout(self) -> float:
        if self._open_until is None:
            return 0.5
        return min(0.5, max(0.01, self._open_until - self._monotonic()))
