"""The dispatcher loop: claim due reminders, check them at send time, send them in a bounded
pool, record each outcome exactly once.

One pass: :func:`claims.claim` marks due rows ``sending`` under a token and a lease;
:meth:`Dispatcher.prepare` applies the gates (:mod:`gates`) and renders (:mod:`compose`); pool
threads pace, read consent and lease once more, send; :class:`finisher.Finisher` writes results.
The loop renews the leases it holds. One rule covers every doubt: a send whose answer was
lost, and a stale claim (a kill, an outage longer than the lease), is *unknown*, and is
settled by asking the provider (:meth:`Transport.find`) before anything is sent again.
SIGTERM: :meth:`Dispatcher.stop` hands unsent rows back.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session
from structlog.contextvars import bound_contextvars

from service.channels.base import Message, Receipt, Transport, TransportError
from service.core.metrics import LAST_TICK
from service.db import daemon_state, optouts
from service.db.context import Hearth
from service.db.models import Channel, Partner, Reminder, ReminderState
from service.db.states import ONE_OFF_PURPOSES
from service.outbox import backoff, claims, compose, fallback, finisher, gates, outcomes
from service.outbox.claims import Job
from service.outbox.outcomes import Outcome, Tally

log = structlog.get_logger("hearth.dispatch")
# A failing pass (database away, disk full) waits before the next one, doubling up to this:
# short enough that rows are handed back within seconds of the database answering again.
PASS_BACKOFF_FIRST, PASS_BACKOFF_MAX = 0.5, 5.0
# The provider's clock and ours may differ a little: an unknown send is looked up from this
# long before its due time.
CLOCK_SKEW = timedelta(minutes=1)


class Dispatcher:
    def __init__(
        self,
        hearth: Hearth,
        transports: dict[Channel, Transport],
        *,
        rng: random.Random | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.hearth = hearth
        self.db = hearth.db
        self.clock = hearth.clock
        self.cfg = hearth.settings.daemon
        self.transports = transports
        self.rng = rng or random.Random()
        self.backoff = backoff.policy(self.cfg, self.rng)
        settings = hearth.settings
        # The longest a send can take: the slower provider's timeout, and a margin.
        longest = max(settings.twilio.timeout_seconds, settings.smtp.timeout_seconds)
        self._send_window = timedelta(seconds=longest + 5)
        self._fallback = timedelta(seconds=settings.delivery.fallback_after_seconds)
        self.worker_id = worker_id or uuid.uuid4().hex[:8]
        self.pool = ThreadPoolExecutor(self.cfg.concurrency, thread_name_prefix="hearth-send")
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[Future[None], Job] = {}
        self.tally = Tally()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._finisher = finisher.Finisher(self._apply, self.cfg, self._idle)
        self._heartbeat = daemon_state.Heartbeat(self.db, daemon_state.DISPATCHER)
        self._stranded, self._reads = claims.Stranded(), claims.GroupReads(self.db)
        self._renew_at = 0.0  # the loop's next lease renewal (monotonic)
        self._failures = 0  # passes failed in a row

    # -- claiming and send-time checks ------------------------------------------------------

    def claim(
        self, limit: int, caps: Mapping[Channel, int] | None = None, token: str | None = None
    ) -> tuple[str, list[int]]:
        return claims.claim(self.db, self.clock.now(), limit, self.cfg.lease_seconds, caps, token)

    def caps(self) -> dict[Channel, int]:
        with self._lock:
            queued = Counter(job.channel for job in self._in_flight.values())
        return claims.caps(self.transports, queued, self.cfg.lease_seconds / 2)

    def prepare(self, token: str, ids: list[int]) -> list[Job]:
        """Apply the send-time gates, settle the rows that must not be sent, render the rest."""
        if not ids:
            return []
        now = self.clock.now()
        base_url = self.hearth.settings.web.public_base_url
        imap = self.hearth.settings.imap
        reply_base = imap.reply_address if imap.enabled else ""
        jobs: list[Job] = []
        with self.db.session(immediate=True) as s:
            rows = claims.claimed_rows(s, token, ids)
            batch = compose.Batch(s, rows, now)
            for r in rows:
                if r.unknown_since is not None:
                    self._to_settle(s, r, batch, now, jobs)
                    continue
                ritual = batch.rituals.get(r.ritual_id) if r.ritual_id is not None else None
                verdict = gates.check(
                    r, batch.partners[r.partner_id], ritual, now, batch.answered
                ) or fallback.check(s, r, batch.partners[r.partner_id], ritual, now, self._fallback)
                if verdict is not None:
                    outcomes.settle_row(r, verdict, now, self.tally)
                    continue
                message = compose.render(
                    s, r, batch, now, self.rng, base_url, self.hearth.keys, reply_base
                )
                quiet = gates.Quiet.of(batch.partners[r.partner_id], ritual)
                jobs.append(Job.of(r, message, quiet=quiet))
        return jobs

    def _to_settle(
        self, s: Session, r: Reminder, batch: compose.Batch, now: datetime, jobs: list[Job]
    ) -> None:
        """A row whose last send is unknown: no gates and no new text; its job asks the
        provider for the text sent then (the stored body; a notice renders the same again).
        A row never rendered was never sent, and one whose address is gone cannot be asked
        about: either is due again at once, through the gates."""
        partner = batch.partners[r.partner_id]
        notice = r.ritual_id is None or r.purpose in ONE_OFF_PURPOSES
        address = partner.phone if r.channel is Channel.SMS else partner.email
        if address is None or (r.body is None and not notice):
            r.state, r.next_attempt_at, r.updated_at = ReminderState.SCHEDULED, now, now
            r.claim_token = r.lease_until = r.unknown_since = None
            return
        if notice:
            base_url = self.hearth.settings.web.public_base_url
            sent = compose.render(s, r, batch, now, self.rng, base_url, self.hearth.keys)
        else:
            sent = Message(to=address, text=r.body or "", reminder_id=r.id)
        jobs.append(Job.of(r, sent, settle=True))

    # -- sending ----------------------------------------------------------------------------

    def send(self, job: Job) -> None:
        """Send one job, record its outcome (a pool thread; every log line carries its ids)."""
        with bound_contextvars(reminder_id=job.id, couple_id=job.couple_id):
            if self.stopping.is_set():
                self._release([job])
                return
            transport = self.transports[job.channel]
            if job.settle:
                self._settle(job, transport)
                return
            # Pacing waits here, after the claim: a stop ends the wait and hands the row back.
            transport.pace(job.message, self.stopping)
            if self.stopping.is_set():
                self._release([job])
                return
            try:
                ours = self._still_ours(job)
            except Exception:
                # Not sent: handed back as soon as the database answers again.
                log.warning("claim_check_failed", reminder_id=job.id, couple_id=job.couple_id)
                self._stranded.add_job(job)
                ours = False
            if not ours:
                return
            started = self.clock.monotonic()
            try:
                receipt: Receipt | TransportError = transport.send(job.message)
            except TransportError as exc:
                receipt = exc
            except Exception as exc:  # a bug or an unexpected library error: retry, loudly
                log.exception(
                    "channel_crashed",
                    reminder_id=job.id,
                    couple_id=job.couple_id,
                    channel=job.channel.value,
                )
                receipt = TransportError(f"unexpected {type(exc).__name__}")
            self.finish(job, receipt, self.clock.monotonic() - started)

    def _settle(self, job: Job, transport: Transport) -> None:
        """Ask the provider whether it has the unknown send: found, it is sent (no second
        request); not found, it is due again; the provider cannot tell now, it stays
        unknown for another lease."""
        started = self.clock.monotonic()
        result: Receipt | TransportError | None
        try:
            result = transport.find(job.message, job.due_at - CLOCK_SKEW, self._recorded)
        except TransportError as exc:
            result = exc
        except Exception as exc:
            log.exception("settle_crashed", reminder_id=job.id, couple_id=job.couple_id)
            result = TransportError(f"unexpected {type(exc).__name__}")
        if result is None:
            self._finisher.record(outcomes.not_at_provider(job, self.clock.now()))
            return
        if isinstance(result, Receipt):
            result = self._unless_alike(job, result)
        self.finish(job, result, self.clock.monotonic() - started)

    def _recorded(self, provider_id: str) -> bool:
        """Whether a reminder records this provider id already: of two texts alike to one
        number, the one another row holds is not the unknown one's."""
        with self.db.read() as conn:
            found = conn.scalar(
                sa.select(Reminder.id).where(Reminder.provider_message_id == provider_id).limit(1)
            )
        return found is not None

    def _unless_alike(self, job: Job, found: Receipt) -> Receipt | TransportError:
        """The message found, unless it may be another row's: one that recorded it since the
        lookup, one to the same address whose send is under way (its id not written yet), or
        an older one to that address whose own send went unknown in this lookup's window.
        While those may still settle, this one is asked again a lease later (so of alike
        unknown texts the older is settled first). If such an older one was given up as
        unknown, the message cannot be told apart from it: this one is given up too, with
        that reason, rather than recorded with a text that may not be its own."""
        r = Reminder
        address = Partner.phone if job.channel is Channel.SMS else Partner.email
        sending = sa.and_(
            r.state == ReminderState.SENDING,
            r.unknown_since.is_(None),
            r.claim_token.is_not(None),
            r.lease_until >= self.clock.now(),
        )
        older_unknown = sa.and_(
            r.id < job.id,
            r.state.in_([ReminderState.SENDING, ReminderState.FAILED]),
            r.unknown_since >= job.due_at - CLOCK_SKEW,
            r.provider_message_id.is_(None),
        )
        alike = sa.and_(
            r.partner_id.in_(sa.select(Partner.id).where(address == job.message.to)),
            r.channel == job.channel,
            sa.or_(sending, older_unknown),
        )
        stmt = sa.select(r.state, r.provider_message_id).where(
            r.id != job.id, sa.or_(r.provider_message_id == found.provider_id, alike)
        )
        with self.db.read() as conn:
            others = conn.execute(stmt.limit(10)).all()
        if not others:
            return found
        if all(state is ReminderState.FAILED and pid is None for state, pid in others):
            return TransportError("an alike text's outcome is unknown too", permanent=True)
        return TransportError("a text to the same partner is on its way", unknown=True)

    def finish(self, job: Job, result: Receipt | TransportError, latency: float) -> None:
        """Hand the outcome to the finisher, which writes outcomes in batches."""
        now = self.clock.now()
        self._finisher.record(outcomes.classify(job, result, latency, now, self.cfg, self.rng))

    def _still_ours(self, job: Job) -> bool:
        """Right before every send, :func:`claims.recheck` (one query): a STOP answered is
        final; one committed here during the read (the opt-out counter moved) reads again."""
        now = self.clock.now()
        lease = timedelta(seconds=self.cfg.lease_seconds)
        # The lease left must outlast the send itself (its provider timeout), else another
        # worker could reclaim the row while the text is on its way.
        need = max(lease / 2, self._send_window)
        seen: int | None = None
        verdict: bool | gates.Verdict = True
        while verdict is True and seen != optouts.generation():
            seen = optouts.generation()
            verdict = claims.recheck(self.db, job, now, need, max(lease, need), self._reads)
        if verdict is True and job.quiet is not None:
            verdict = job.quiet.hold(now, job.expires_at) or True
        if isinstance(verdict, gates.Verdict):
            self._finisher.record(outcomes.settled(job, verdict, now))
            return False
        if not verdict:
            self.tally.add("lost_claims")
            log.warning("claim_lost_before_send", reminder_id=job.id, couple_id=job.couple_id)
        return verdict

    def _apply(self, batch: list[Outcome]) -> None:
        outcomes.apply(self.db, batch, self.clock.now(), self.backoff, self.tally)

    # -- the loop ---------------------------------------------------------------------------

    def submit(self, jobs: list[Job]) -> None:
        if self.stopping.is_set():
            self._release(jobs)  # claimed as the stop came: back at once, unsent
            return
        for job in jobs:
            fut = self.pool.submit(self.send, job)
            with self._lock:
                self._in_flight[fut] = job
            fut.add_done_callback(self._done)

    def _done(self, fut: Future[None]) -> None:
        with self._lock:
            self._in_flight.pop(fut, None)
        self._wake.set()
        with self._idle:
            self._idle.notify_all()

    def _held(self) -> set[str]:  # the claims still ours: queued, sending, or unwritten
        with self._lock:
            return {job.token for job in self._in_flight.values()} | self._finisher.tokens()

    def renew_leases(self) -> int:
        """Extend the lease of every row this worker still holds (a slow provider, pacing or
        a busy database never lets a live worker's claim go stale); returns how many rows.
        A failure is logged: the next renewal, a third of a lease later, tries again."""
        self._renew_at = self.clock.monotonic() + self.cfg.lease_seconds / 3
        lease = timedelta(seconds=self.cfg.lease_seconds)
        try:
            return claims.renew_held(self.db, self._held(), self.clock.now(), lease)
        except Exception:
            log.warning("leases_not_renewed", exc_info=True)
            return 0

    @property
    def in_flight(self) -> int:
        """Sends running or queued, plus outcomes not yet recorded."""
        with self._lock:
            return len(self._in_flight) + self._finisher.unfinished

    def _pass(self, limit: int) -> int:
        """Claim, gate, render, submit; a failed pass leaves its token to the next one."""
        if self._stranded:
            self.tally.add("released", self._stranded.hand_back(self.db, self.clock.now()))
        token = claims.new_token()
        try:
            token, ids = self.claim(limit, self.caps(), token)
            self.tally.add("claimed", len(ids))
            self.submit(self.prepare(token, ids))
        except Exception:
            self._stranded.add(token)
            raise
        return len(ids)

    def run_once(self, limit: int | None = None) -> Tally:
        """Claim what is due now, send it, wait for every outcome (tests, ``send-now``)."""
        before = self.tally.copy()
        while True:
            claimed = self._pass(limit or self.cfg.batch_size)
            self.wait_idle()
            if not claimed or limit is not None:
                break
        LAST_TICK.mark(self.clock.now())
        return self.tally.since(before)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted send has run and its outcome is recorded."""
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        with self._idle:
            while self.in_flight:
                remaining = None if deadline is None else deadline - self.clock.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(0.5 if remaining is None else min(0.5, remaining))
        return True

    def wake(self) -> None:
        self._wake.set()

    def loop(
        self, sleep_cap: float | None = None, on_tick: Callable[[], None] | None = None
    ) -> None:
        """The daemon's dispatch loop: keep up to twice the concurrency claimed and queued;
        sleep until the next due row, an event, or a finished send."""
        cap = sleep_cap if sleep_cap is not None else self.cfg.dispatch_interval_seconds
        window = 2 * self.cfg.concurrency
        while not self.stopping.is_set():
            if self.clock.monotonic() >= self._renew_at:
                self.renew_leases()
            free = window - self.in_flight
            claimed = 0
            if free > 0:
                try:
                    claimed = self._pass(min(free, self.cfg.batch_size))
                except Exception:
                    # No tick: a loop whose every pass fails must look stalled to /readyz.
                    self._pass_failed()
                    if on_tick is not None:
                        on_tick()
                    continue
            if self._failures:
                log.info("dispatch_recovered", failed_passes=self._failures)
                self._failures = 0
            self._ticked()
            if on_tick is not None:
                on_tick()
            if claimed and self.in_flight < window:
                continue
            wait = min(cap, max(0.0, self._renew_at - self.clock.monotonic()))
            if not claimed and self.in_flight == 0:
                nxt = self._safe_next_due()
                if nxt is not None:
                    wait = min(cap, max(0.0, (nxt - self.clock.now()).total_seconds()))
            self._wake.wait(wait)
            self._wake.clear()

    def _pass_failed(self) -> None:
        """Back off after a failed pass, doubling the wait while they keep failing (a pass
        that fails at once must not spin), and log the fault once with its traceback, then
        only at each doubling: one fault, a few lines, not one per pass."""
        self._failures += 1
        n = self._failures
        if n == 1:
            log.exception("dispatch_pass_failed")
        elif n & (n - 1) == 0:
            log.warning("dispatch_pass_still_failing", failed_passes=n)
        self.stopping.wait(min(PASS_BACKOFF_MAX, PASS_BACKOFF_FIRST * 2 ** (n - 1)))

    def _ticked(self) -> None:
        """Record a successful pass: in this process, and in the shared heartbeat row."""
        LAST_TICK.mark(now := self.clock.now())
        self._heartbeat.beat(now)

    def _safe_next_due(self) -> datetime | None:
        try:
            return claims.next_due(self.db)
        except Exception:
            log.exception("next_due_failed")
            return None

    def stop(self, grace: float) -> int:
        """Stop claiming; hand back the rows of jobs not started (pacing waits wake and do so);
        give running sends ``grace`` s. Returns how many still run (each records its own)."""
        self.stopping.set()
        self._wake.set()
        with self._lock:
            queued = list(self._in_flight.items())
        self._release([job for fut, job in queued if fut.cancel()])
        self.wait_idle(grace)
        return self.in_flight

    def _release(self, jobs: list[Job]) -> None:
        jobs = [j for j in jobs if not j.settle]  # unknown stays unknown: its lease runs out
        if jobs and claims.release(self.db, jobs, self.clock.now()):
            self.tally.add("released", len(jobs))

    def close(self) -> None:
        """After :meth:`stop`: write queued outcomes; close transports once no send uses them."""
        with self._lock:
            running = bool(self._in_flight)
        self._finisher.close(timeout=10)
        self.pool.shutdown(wait=False, cancel_futures=True)
        if not running:
            for t in self.transports.values():
                t.close()
