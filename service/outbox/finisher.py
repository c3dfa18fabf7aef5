"""The finisher: writes queued outcomes to the database in batches, on a thread of its own.

One write transaction holds many sends' outcomes, instead of many threads queueing for
SQLite's one lock. It keeps trying while the database is busy or away, for about a lease;
an outcome it could not write leaves its row ``sending``, and once the lease has run out the
row is settled with the provider (its record says whether the text went out), never simply
sent again (docs/delivery.md). So a kill or an outage loses no outcome that matters.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable

import structlog

from service.core.clock import SYSTEM_CLOCK
from service.core.config import DaemonSettings
from service.outbox.outcomes import Outcome

log = structlog.get_logger("hearth.dispatch")
RECORD_RETRY_FIRST = 0.2  # seconds before writing outcomes again after a failed write
RECORD_RETRY_MAX = 10.0
BATCH_MAX = 1000  # outcomes per write transaction


class Finisher:
    """Writes queued outcomes in batches on a thread of its own. After :meth:`close` the
    thread that has an outcome writes it itself: the finisher is a daemon thread and may
    die with the process before it would."""

    def __init__(
        self,
        apply: Callable[[list[Outcome]], None],
        cfg: DaemonSettings,
        idle: threading.Condition,
    ) -> None:
        self._apply = apply
        # How long to keep trying, counted in the waits between tries (real time, the only
        # time a thread can wait): a lease, after which the rows are settled anyway.
        self._give_up_after = cfg.lease_seconds
        self._idle = idle
        self._queue: queue.Queue[Outcome] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stop = threading.Event()  # set by close: the waits between tries end early
        # Claim tokens of outcomes not yet written: their leases are still to be renewed.
        self._tokens: Counter[str] = Counter()

    @property
    def unfinished(self) -> int:
        return self._queue.unfinished_tasks

    def tokens(self) -> set[str]:
        """The claims of outcomes recorded but not yet written (their leases are renewed)."""
        with self._lock:
            return set(self._tokens)

    def record(self, o: Outcome) -> None:
        with self._lock:
            late = self._closed
            self._tokens[o.job.token] += 1
            if not late:
                self._queue.put(o)
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="hearth-finish", daemon=True
                    )
                    self._thread.start()
        if late:
            # The interpreter waits for the pool's threads at exit: a send that outlasted
            # the grace period is still recorded, not left to be settled later.
            try:
                self.write_until_done([o])
            finally:
                self._written([o])

    def _written(self, batch: list[Outcome]) -> None:
        with self._lock:
            self._tokens.subtract(o.job.token for o in batch)
            for o in batch:
                if self._tokens[o.job.token] <= 0:
                    self._tokens.pop(o.job.token, None)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.write_until_done(batch)
            finally:
                self._written(batch)
                for _ in batch:
                    self._queue.task_done()
                with self._idle:
                    self._idle.notify_all()

    def write_until_done(self, batch: list[Outcome]) -> bool:
        """Write the outcomes, trying again while the database is busy or away, until the
        waits add up to a lease (the rows are settled with the provider after that)."""
        delay, waited = RECORD_RETRY_FIRST, 0.0
        while True:
            try:
                self._apply(batch)
                return True
            except Exception:
                if waited + delay > self._give_up_after or self._stop.is_set():
                    log.exception("outcomes_not_recorded", count=len(batch))
                    return False
                if waited == 0:  # one line with the cause, not one per try
                    log.warning("outcomes_retrying", count=len(batch), exc_info=True)
            self._stop.wait(delay)  # this thread only writes outcomes; sends go on meanwhile
            waited += delay
            delay = min(delay * 2, RECORD_RETRY_MAX)

    def close(self, timeout: float) -> None:
        """From now on each outcome is written by its own thread; wait up to ``timeout``
        seconds (real time: the database may hang) for the queued ones to be written."""
        with self._lock:
            self._closed = True
        # The grace period is real time (SYSTEM_CLOCK): a fake clock would never end it.
        deadline = SYSTEM_CLOCK.monotonic() + timeout
        with self._idle:
            while self._queue.unfinished_tasks:
                left = deadline - SYSTEM_CLOCK.monotonic()
                if left <= 0:
                    self._stop.set()  # the finisher gives up its waits: rows are settled later
                    return
                self._idle.wait(min(0.1, left))
