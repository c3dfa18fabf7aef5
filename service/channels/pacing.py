"""Send pacing: a token bucket per sender and one per account.

A long code sends about one segment a second, a short code about a hundred; Twilio queues
what exceeds that and fails with 30001 when its queue overflows. Pacing on our side keeps the
queue short, so a burst goes out earliest-due first instead of piling up at the provider.
"""

from __future__ import annotations

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
