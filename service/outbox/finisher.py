"""The finisher: writes queued outcomes to the database in batches, on a thread of its own,
after journaling each one (:mod:`journal`) the moment the provider answered.

One write transaction holds many sends' outcomes, instead of many threads queueing for
SQLite's one lock. It keeps trying while the database is busy or away: an outcome not
written leaves its row 'sending', and once the lease runs out it would be sent again.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from service.channels.base import Message
from service.core.clock import Clock
from service.core.config import DaemonSettings
from service.db.models import Channel, ReminderState
from service.outbox.claims import Job
from service.outbox.journal import Journal, drop
from service.outbox.journal import read as read_segment
from service.outbox.outcomes import Outcome

log = structlog.get_logger("hearth.dispatch")
RECORD_RETRY_FIRST = 0.2  # seconds before writing outcomes again after a failed write
BATCH_MAX = 1000  # outcomes per write transaction


def to_record(o: Outcome) -> dict[str, Any]:
    """An outcome as the journal keeps it: ids, claim, state; no address or text."""
    j = o.job
    return {
        "id": j.id,
        "token": j.token,
        "couple": j.couple_id,
        "partner": j.partner_id,
        "channel": j.channel.value,
        "due": j.due_at,
        "expires": j.expires_at,
        "attempts": j.attempts,
        "fields": o.fields,
        "outcome": o.outcome,
        "at": o.at,
        "latency": o.latency,
        "error": o.error,
        "opted_out": o.opted_out,
    }


def from_record(r: dict[str, Any]) -> Outcome:
    """The outcome a journal record holds (its job without the message, long sent)."""
    job = Job(
        r["id"],
        r["token"],
        r["couple"],
        r["partner"],
        Channel(r["channel"]),
        r["due"],
        r["expires"],
        r["attempts"],
        Message("", ""),
        None,
    )
    fields = dict(r["fields"])
    fields["state"] = ReminderState(fields["state"])
    return Outcome(
        job, fields, r["outcome"], r["at"], r["latency"], r["error"], r["opted_out"], replayed=True
    )


class Finisher:
    """Writes queued outcomes in batches on a thread of its own (one write transaction for
    many sends, instead of many threads queueing for SQLite's one lock). After
    :meth:`close` the thread that has an outcome writes it itself: the finisher is a daemon
    thread and may die with the process before it would."""

    def __init__(
        self,
        apply: Callable[[list[Outcome]], None],
        clock: Clock,
        cfg: DaemonSettings,
        idle: threading.Condition,
    ) -> None:
        self._apply = apply
        self._clock = clock
        self._give_up_after = cfg.lease_seconds
        self.journal = Journal(Path(cfg.journal_dir)) if cfg.journal_dir else None
        self._idle = idle
        self._queue: queue.Queue[Outcome] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Claim tokens of outcomes not yet written: their leases are still to be renewed.
        self._tokens: Counter[str] = Counter()

    @property
    def unfinished(self) -> int:
        return self._queue.unfinished_tasks

    def tokens(self) -> set[str]:
        """The claims of outcomes recorded but not yet written (see :mod:`leases`)."""
        with self._lock:
            return set(self._tokens)

    def record(self, o: Outcome) -> None:
        if self.journal is not None:
            o.segment = self.journal.append(to_record(o))  # first: it survives a kill
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
            # the grace period is still recorded, not left 'sending' to be sent again.
            ok = False
            try:
                ok = self.write_until_done([o])
            finally:
                self._written([o], ok)

    def _written(self, batch: list[Outcome], ok: bool = True) -> None:
        if ok and self.journal is not None:
            self.journal.written([o.segment for o in batch if o.segment is not None])
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
            ok = False
            try:
                ok = self.write_until_done(batch)
            finally:
                self._written(batch, ok)  # not written: the journal keeps them for a replay
                for _ in batch:
                    self._queue.task_done()
                with self._idle:
                    self._idle.notify_all()

    def write_until_done(self, batch: list[Outcome]) -> bool:
        """Write the outcomes, trying again while the database is busy or away, for as long
        as a lease lasts (after that the rows are another worker's to send)."""
        delay = RECORD_RETRY_FIRST
        deadline = self._clock.monotonic() + self._give_up_after
        while True:
            try:
                self._apply(batch)
                return True
            except Exception:
                if self._clock.monotonic() + delay >= deadline:
                    log.exception("outcomes_not_recorded", count=len(batch))
                    return False
                log.warning("outcomes_retrying", count=len(batch), in_s=delay, exc_info=True)
            time.sleep(delay)  # this thread only writes outcomes; the sends go on meanwhile
            delay = min(delay * 2, 10.0)

    def recover(self) -> int:
        """Write what dead processes left in the journal (this slot's last holder, then
        slots no live process holds); returns how many outcomes."""
        if self.journal is None:
            return 0
        n = 0
        inherited, self.journal.inherited = self.journal.inherited, []
        found = [(p, read_segment(p)) for _, p in inherited]
        for path, records in [*found, *self.journal.orphans()]:
            outcomes = [from_record(r) for r in records]
            for lo in range(0, len(outcomes), BATCH_MAX):
                if not self.write_until_done(outcomes[lo : lo + BATCH_MAX]):
                    return n  # the database is away: the file stays for the next try
            drop(path)
            n += len(outcomes)
            log.info("journal_replayed", outcomes=len(outcomes), segment=path.name)
        return n

    def close(self, timeout: float) -> None:
        """From now on each outcome is written by its own thread; wait (bounded, should the
        database hang) for the queued ones to be written."""
        with self._lock:
            self._closed = True
        deadline = self._clock.monotonic() + timeout
        with self._idle:
            while self._queue.unfinished_tasks and self._clock.monotonic() < deadline:
                self._idle.wait(0.1)
