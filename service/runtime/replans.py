"""Replanning after events, one couple at a time: a couple whose replan raises is set aside
and tried again with backoff, so the others' edits, opt-ins and repair reactions still run.

The failure is logged once, when it starts (with the couple, the events that asked for the
replan and the error's class), once more when a retry succeeds, and counted in
``hearth_replans_failing`` (couples waiting for a retry) and ``hearth_replan_failures_total``.
The events are marked handled either way: the retry lives in this process, and after a
restart the planning pass and the send-time check against the current schedule
(service/outbox/gates.py) still keep an old time from being sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog
from prometheus_client import Counter, Gauge

from service.core.metrics import REGISTRY

log = structlog.get_logger("hearth.replans")

FIRST_RETRY = 5.0  # seconds; doubled after each failure...
MAX_RETRY = 600.0  # ...up to ten minutes

FAILING = Gauge(
    "hearth_replans_failing",
    "Couples whose replan after an edit failed and waits for a retry",
    registry=REGISTRY,
)
FAILURES = Counter(
    "hearth_replan_failures_total",
    "Replans of one couple that raised (first tries and retries)",
    registry=REGISTRY,
)


@dataclass
class _Retry:
    failures: int
    at: float  # monotonic seconds: when to try again
    reason: str


class Replans:
    """The couples to replan now: those named by new events, and those whose retry is due.
    Not thread-safe: the daemon calls it under its events lock."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._waiting: dict[int, _Retry] = {}

    @property
    def waiting(self) -> dict[int, str]:
        """Couple id -> why its last replan failed (for tests and a look in a debugger)."""
        return {cid: r.reason for cid, r in self._waiting.items()}

    def run(
        self, asked: Iterable[int], replan: Callable[[int], None], events: dict[int, list[int]]
    ) -> None:
        """Replan each couple in ``asked`` and each whose retry is due, in id order; a
        failure of one is recorded and the next couple goes on. ``events``: couple id ->
        the ids of the events that asked (for the log line)."""
        now = self._monotonic()
        due = {cid for cid, r in self._waiting.items() if r.at <= now}
        for couple_id in sorted(set(asked) | due):
            try:
                replan(couple_id)
            except Exception as exc:  # any one couple's fault must not stop the others
                self._failed(couple_id, exc, events.get(couple_id, []), now)
                continue
            if self._waiting.pop(couple_id, None) is not None:
                log.info("replan_recovered", couple_id=couple_id)
        FAILING.set(len(self._waiting))

    def _failed(self, couple_id: int, exc: Exception, event_ids: list[int], now: float) -> None:
        FAILURES.inc()
        before = self._waiting.get(couple_id)
        failures = before.failures + 1 if before else 1
        wait = min(FIRST_RETRY * 2 ** (failures - 1), MAX_RETRY)
        reason = type(exc).__name__
        self._waiting[couple_id] = _Retry(failures, now + wait, reason)
        if before is None:
            log.exception(
                "replan_failed",
                couple_id=couple_id,
                event_ids=event_ids,
                error=reason,
                retry_in_s=wait,
            )
