"""The lease heartbeat: a worker renews the claims it holds while it holds them.

A claim's lease is how long other workers wait before they take a row of a worker that
died. Short is good for recovery (a killed worker's rows go out again within a lease), but a
lease that ran out under a worker that is merely slow (a provider taking its time, rows
waiting for pacing, outcomes waiting for a busy database) lets a second worker send the
same text. The :class:`LeaseKeeper` resolves that: every third of a lease it extends, in one
``UPDATE``, the lease of every row still ``sending`` under a claim token this worker holds.
A live worker therefore never loses a claim to the clock, and a dead one stops renewing at
once.

Renewal is by claim token, so it is safe however late it comes: a row released, settled
or reclaimed by another worker no longer carries our token and is not touched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from datetime import timedelta

import sqlalchemy as sa
import structlog

from service.db.context import Hearth
from service.db.models import Reminder, ReminderState, table

log = structlog.get_logger("hearth.dispatch")
_T = table(Reminder)
# Renewals per lease: a renewal may fail twice (a database blip) before the lease runs out.
BEATS_PER_LEASE = 3


class LeaseKeeper:
    """Renews the leases of the claims ``held()`` names, on a thread of its own."""

    def __init__(
        self,
        hearth: Hearth,
        held: Callable[[], Collection[str]],
        recover: Callable[[], object] | None = None,
    ) -> None:
        self.db = hearth.db
        self.clock = hearth.clock
        lease_seconds = hearth.settings.daemon.lease_seconds
        self.lease = timedelta(seconds=lease_seconds)
        self.interval = lease_seconds / BEATS_PER_LEASE
        self._held = held
        # Run before each beat's renewal (the first one at start): the finisher's replay of
        # outcomes dead processes journaled, whose rows are then no longer 'sending'.
        self._recover = recover
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hearth-lease", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while True:
            if self._recover is not None:
                try:
                    self._recover()
                except Exception:
                    log.exception("journal_replay_failed")
            self.renew()
            if self._stop.wait(self.interval):
                return

    def renew(self) -> int:
        """Extend to a full lease from now every row still ``sending`` under a held token;
        returns how many rows. A failure is logged: the next beat tries again."""
        tokens = sorted(set(self._held()))
        if not tokens:
            return 0
        until = self.clock.now() + self.lease
        try:
            with self.db.begin() as conn:
                # Locked in id order, as the finisher locks them: the two cannot deadlock.
                ids = (
                    sa.select(_T.c.id)
                    .where(
                        _T.c.claim_token.in_(tokens),
                        _T.c.state == ReminderState.SENDING,
                        _T.c.lease_until < until,
                    )
                    .order_by(_T.c.id)
                    .with_for_update()
                )
                n = conn.execute(
                    _T.update().where(_T.c.id.in_(ids.scalar_subquery())).values(lease_until=until)
                ).rowcount
        except Exception:
            log.exception("leases_not_renewed", claims=len(tokens))
            return 0
        return int(n)
