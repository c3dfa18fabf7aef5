"""When to try a failed send again: one rule for the dispatcher and for delivery receipts."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

from service.core.config import DaemonSettings

Policy = Callable[[int], timedelta]


def jittered(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: between half and all of base * 2^(attempts-1)."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return rng.uniform(delay / 2, delay)


def policy(cfg: DaemonSettings, rng: random.Random) -> Policy:
    """The delay before the next attempt, after ``attempts`` so far."""

    def delay(attempts: int) -> timedelta:
        return timedelta(
            seconds=jittered(attempts, cfg.retry_base_seconds, cfg.retry_max_seconds, rng)
        )

    return delay
