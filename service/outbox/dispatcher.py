"""The dispatcher: claims due reminders, re-checks them at send time, sends concurrently and
records each outcome exactly once.

A claim marks rows ``sending`` with a lease and a claim token (PostgreSQL: ``FOR UPDATE SKIP
LOCKED``, so several workers share the queue; SQLite: ``BEGIN IMMEDIATE``, one writer). Every
later update is conditional on that token: a row whose lease ran out and was reclaimed by
another worker cannot be finished twice. A crash leaves rows ``sending``; their lease expires
and they are claimed again, so delivery is at least once, with duplicates limited to the sends
in flight at the crash.
"""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, joinedload
from structlog.contextvars import bound_contextvars

from service.channels.base import Message, Receipt, Transport, TransportError
from service.core.metrics import DISPATCH_TICK, observe_send
from service.core.timeutil import in_quiet_hours, quiet_hours_end, zone
from service.db import daemon_state
from service.db.context import Hearth
from service.db.models import (
    Channel,
    CheckIn,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
    Ritual,
    RitualKind,
    table,
)
from service.domain import partners, pauses, prompts
from service.domain import unsubscribe as links
from service.domain.recurrence import is_occurrence, schedule_of
from service.outbox import backoff, receipts, texts

log = structlog.get_logger("hearth.dispatch")
_T = table(Reminder)
# A job sent within this long of its gate check is not looked at again before the send (a
# STOP in those seconds races the send as it would race the HTTP request itself); one that
# waited longer, for pacing or a busy pool, is. A claim batch drains within it at full speed.
FRESH_SECONDS = 5.0
RECORD_RETRY_FIRST = 0.2  # seconds before writing outcomes again after a failed write


@dataclass(frozen=True)
class Job:
    """One claimed reminder, ready to send."""

    id: int
    token: str
    couple_id: int
    partner_id: int
    channel: Channel
    due_at: datetime
    expires_at: datetime
    attempts: int
    message: Message
    lease_until: datetime | None = None  # as claimed
    # When the gates were checked (monotonic): a job sent soon after needs no second look.
    checked: float = field(default_factory=time.monotonic, compare=False)


@dataclass
class _Outcome:
    job: Job
    fields: dict[str, object]
    outcome: str  # a final state's value, or "retry"
    at: datetime
    latency: float | None  # None: nothing was sent
    error: str | None
    opted_out: bool = False


@dataclass
class Tally:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    skipped: int = 0
    expired: int = 0
    deferred: int = 0
    cancelled: int = 0
    lost_claims: int = 0
    released: int = 0


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
        self.retry = backoff.policy(self.cfg, self.rng)
        settings = hearth.settings
        # The longest a send can take: the slower provider's timeout, and a margin.
        self._send_window = timedelta(
            seconds=max(settings.twilio.timeout_seconds, settings.smtp.timeout_seconds) + 5
        )
        self.worker_id = worker_id or uuid.uuid4().hex[:8]
        self.pool = ThreadPoolExecutor(
            max_workers=self.cfg.concurrency, thread_name_prefix="hearth-send"
        )
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[Future[None], Job] = {}
        self._closed = False  # after close(), a send records its own outcome (see _record)
        self.tally = Tally()
        self._wake = threading.Event()
        self._outcomes: queue.Queue[_Outcome] = queue.Queue()
        self._finisher: threading.Thread | None = None
        self._idle = threading.Condition()
        self._beat_at: datetime | None = None  # when this loop last wrote its heartbeat

    # -- claiming ---------------------------------------------------------------------------

    def claim(self, limit: int, caps: Mapping[Channel, int] | None = None) -> tuple[str, list[int]]:
        """Mark up to ``limit`` due rows ``sending`` under a fresh claim token, at most
        ``caps[channel]`` of a paced channel (see :meth:`caps`)."""
        now = self.clock.now()
        token = uuid.uuid4().hex
        capped = {ch: n for ch, n in (caps or {}).items() if n < limit}
        rest = [ch for ch in Channel if ch not in capped]
        ids: list[int] = []
        with self.db.write_engine.begin() as conn:
            for ch, n in sorted(capped.items()):
                if n > 0 and len(ids) < limit:
                    stmt = self._claim_stmt(now, token, min(n, limit - len(ids)), [ch])
                    ids.extend(conn.scalars(stmt))
            if rest and len(ids) < limit:
                stmt = self._claim_stmt(now, token, limit - len(ids), rest if capped else None)
                ids.extend(conn.scalars(stmt))
        return token, sorted(ids)

    def _claim_stmt(
        self, now: datetime, token: str, limit: int, channels: list[Channel] | None
    ) -> sa.UpdateBase:
        due = sa.or_(
            sa.and_(_T.c.state == ReminderState.SCHEDULED, _T.c.next_attempt_at <= now),
            sa.and_(_T.c.state == ReminderState.SENDING, _T.c.lease_until < now),
        )
        pick = sa.select(_T.c.id).where(due)
        if channels is not None:
            pick = pick.where(_T.c.channel.in_(channels))
        pick = pick.order_by(_T.c.next_attempt_at, _T.c.id).limit(limit)
        return (
            _T.update()
            .where(_T.c.id.in_(pick.with_for_update(skip_locked=True).scalar_subquery()))
            .values(
                state=ReminderState.SENDING,
                claim_token=token,
                lease_until=now + timedelta(seconds=self.cfg.lease_seconds),
                attempts=_T.c.attempts + 1,
                updated_at=now,
            )
            .returning(_T.c.id)
        )

    def caps(self) -> dict[Channel, int]:
        """For each paced channel, how many more of its rows a claim may take: what pacing
        lets through in half a lease, less what is already queued for it. Rows claimed
        beyond that would wait for pacing past their lease, and this worker or another one
        would claim them again and send them twice."""
        span = self.cfg.lease_seconds / 2
        with self._lock:
            queued = Counter(job.channel for job in self._in_flight.values())
        caps: dict[Channel, int] = {}
        for ch, transport in self.transports.items():
            n = transport.capacity(span)
            if n is not None:
                caps[ch] = max(0, n - queued[ch])
        return caps

    def next_due(self) -> datetime | None:
        with self.db.engine.connect() as conn:
            return conn.scalar(
                sa.select(sa.func.min(_T.c.next_attempt_at)).where(
                    _T.c.state == ReminderState.SCHEDULED
                )
            )

    # -- send-time checks -------------------------------------------------------------------

    def prepare(self, token: str, ids: list[int]) -> list[Job]:
        """Apply the send-time gates in order (paused; occurrence no longer planned; a chase
        already answered; opted out; stale; quiet hours), settle the rows that must not be
        sent, and render the rest."""
        if not ids:
            return []
        now = self.clock.now()
        jobs: list[Job] = []
        with self.db.session(immediate=True) as s:
            rows = list(
                s.scalars(
                    sa.select(Reminder)
                    .where(Reminder.id.in_(ids), Reminder.claim_token == token)
                    .order_by(Reminder.next_attempt_at, Reminder.id)
                )
            )
            context = _Context(s, rows, now)
            for r in rows:
                verdict = self._gate(r, context, now)
                if verdict is not None:
                    self._settle(s, r, verdict, now)
                    continue
                jobs.append(self._job(s, r, context, now))
        return jobs

    def _gate(self, r: Reminder, ctx: _Context, now: datetime) -> _Verdict | None:
        partner = ctx.partners[r.partner_id]
        ritual = ctx.rituals.get(r.ritual_id) if r.ritual_id is not None else None
        if r.purpose is ReminderPurpose.NOTICE:
            if partner.couple.is_paused(now):
                return _Verdict(ReminderState.SKIPPED, "paused")
        elif ritual is None:
            return _Verdict(ReminderState.CANCELLED, "ritual removed")
        elif _paused(r, ritual, now):
            return _Verdict(ReminderState.SKIPPED, "paused")
        elif (  # any message about an occurrence: nudge, snooze, invitation, follow-up
            r.occurrence_start
            in {e.original_start for e in ritual.exceptions if e.new_start is None}
            or (ritual.ended_at is not None and ritual.ended_at <= r.occurrence_start)
            or (r.attempts > 1 and not _still_in_schedule(r, ritual))
        ):
            return _Verdict(ReminderState.CANCELLED, "occurrence no longer planned")
        elif r.purpose is ReminderPurpose.CHASE and ctx.answered(r):
            return _Verdict(ReminderState.SKIPPED, "already done")
        if not _reachable(partner, r.channel):
            return _Verdict(ReminderState.SKIPPED, f"partner opted out of {r.channel.value}")
        if now >= r.expires_at:
            return _Verdict(ReminderState.EXPIRED, "stale")
        tz = zone(partner.timezone)
        if in_quiet_hours(now, tz, partner.quiet_start, partner.quiet_end):
            assert partner.quiet_start is not None and partner.quiet_end is not None
            end = quiet_hours_end(now, tz, partner.quiet_start, partner.quiet_end)
            if end < r.expires_at:
                return _Verdict(ReminderState.SCHEDULED, "quiet hours", retry_at=end)
            return _Verdict(ReminderState.EXPIRED, "quiet hours until past expiry")
        return None

    def _settle(self, s: Session, r: Reminder, v: _Verdict, now: datetime) -> None:
        r.state = v.state
        r.last_error = v.reason
        r.claim_token = None
        r.lease_until = None
        r.updated_at = now
        if v.retry_at is not None:
            r.next_attempt_at = v.retry_at
            r.attempts = max(0, r.attempts - 1)  # a deferral is not a delivery attempt
            self._count("deferred")
        else:
            r.final_at = now
            self._count(v.state.value)
            observe_send(r.channel.value, v.state.value, None, None)
        log.info(
            "reminder_" + ("deferred" if v.retry_at else v.state.value),
            reminder_id=r.id,
            couple_id=r.couple_id,
            channel=r.channel.value,
            reason=v.reason,
        )

    def _job(self, s: Session, r: Reminder, ctx: _Context, now: datetime) -> Job:
        partner = ctx.partners[r.partner_id]
        if r.ritual_id is None:
            assert r.body is not None, "a notice carries its text"
            message = texts.notice(r.body, r.channel, _address(partner, r.channel), r.id)
            return self._as_job(r, message)
        ritual = ctx.rituals[r.ritual_id]
        prompt_text = None
        if r.purpose in (ReminderPurpose.NUDGE, ReminderPurpose.SNOOZE):
            # A retry keeps its prompt; both partners share the occurrence's prompt.
            pid = r.prompt_id or ctx.shared_prompt(r)
            prompt = s.get(prompts.Prompt, pid) if pid else None
            if prompt is None:
                prompt = prompts.next_prompt(
                    s,
                    ritual,
                    now,
                    self.rng,
                    pool=ctx.pool(ritual.kind),
                    rotation=ctx.rotation(ritual.id, now),
                )
            if prompt is not None:
                ctx.remember_prompt(r, prompt.id)
                r.prompt_id, prompt_text = prompt.id, prompt.text
        base = self.hearth.settings.web.public_base_url
        # Derived at send time; the stored body keeps only a reference (domain/unsubscribe).
        unsubscribe = links.url(s, base, partner) if r.channel is Channel.EMAIL else None
        start = _actual_start(ritual, r.occurrence_start)  # a moved occurrence's new time
        mctx = texts.Context(ritual, partner, r.purpose, start, prompt_text, unsubscribe)
        message = texts.render(mctx, r.channel, _address(partner, r.channel), r.id)
        r.body = links.without_link(message.text, unsubscribe)
        return self._as_job(r, message)

    def _as_job(self, r: Reminder, message: Message) -> Job:
        assert r.claim_token is not None
        return Job(
            r.id,
            r.claim_token,
            r.couple_id,
            r.partner_id,
            r.channel,
            r.due_at,
            r.expires_at,
            r.attempts,
            message,
            r.lease_until,
        )

    # -- sending ----------------------------------------------------------------------------

    def send(self, job: Job) -> None:
        """Send one job and record its outcome (runs in a worker thread). Every line logged
        meanwhile, ours or a library's (the HTTP client's, say), carries the reminder's and
        the couple's ids, so an operator can follow one send through the log."""
        with bound_contextvars(reminder_id=job.id, couple_id=job.couple_id):
            if self.stopping.is_set():
                self._release(job)
                return
            transport = self.transports[job.channel]
            # Pacing waits here, after the claim: a stop ends the wait and hands the row back.
            transport.pace(job.message, self.stopping)
            if self.stopping.is_set():
                self._release(job)
                return
            fresh = time.monotonic() - job.checked < FRESH_SECONDS
            try:
                ours = self._still_ours(job, fresh)
            except Exception:
                # Unsure: not sent now. The lease runs out and the row is claimed again.
                log.exception("claim_check_failed", reminder_id=job.id, couple_id=job.couple_id)
                ours = False
            if not ours:
                return
            started = time.monotonic()
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
            latency = time.monotonic() - started
            self.finish(job, receipt, latency)

    def finish(self, job: Job, result: Receipt | TransportError, latency: float) -> None:
        """Queue the outcome for the finisher, which records outcomes in batches: one write
        transaction for many sends, instead of many threads queueing for SQLite's one lock
        (after :meth:`close`, the outcome is written at once: see :meth:`_record`)."""
        self._record(self._outcome(job, result, latency))

    def _record(self, o: _Outcome) -> None:
        with self._lock:
            if not self._closed:
                self._outcomes.put(o)
                late = False
            else:
                late = True
        if not late:
            self._ensure_finisher()
            return
        # After close() the finisher (a daemon thread) may die with the process before it
        # writes this, so the sending thread writes it. The interpreter waits for the pool's
        # threads at exit: a send that outlasted the grace period is still recorded, not
        # left 'sending' to be reclaimed and sent again.
        self._apply_until_recorded([o])

    def _still_ours(self, job: Job, fresh: bool) -> bool:
        """Right before the send: is the claim still ours, the reminder still fresh and its
        partner still reachable? A job that waited (pacing, a full pool) is looked at again:
        a STOP, or a lease about to run out, may have come meanwhile. A claim whose lease is
        more than half gone is renewed first (a write only then); a lost claim is left to
        whoever holds it, unsent; a reminder that went stale while it waited is expired."""
        now = self.clock.now()
        lease = timedelta(seconds=self.cfg.lease_seconds)
        # The lease left must outlast the send itself (its provider timeout), else another
        # worker could reclaim the row while the text is on its way.
        need = max(lease / 2, self._send_window)
        if (
            fresh
            and job.lease_until is not None
            and now < job.expires_at
            and job.lease_until - now >= need
        ):
            # Checked moments ago and nobody can reclaim before the lease runs out: the usual
            # send costs no extra query.
            return True
        mine = sa.and_(
            _T.c.id == job.id,
            _T.c.claim_token == job.token,
            _T.c.state == ReminderState.SENDING,
        )
        with self.db.session() as s:
            row = s.execute(sa.select(_T.c.lease_until, _T.c.expires_at).where(mine)).first()
            partner = s.get(Partner, job.partner_id)
            reachable = partner is not None and _reachable(partner, job.channel)
        if row is not None and (now >= row.expires_at or not reachable):
            state, reason = (
                (ReminderState.EXPIRED, "stale")
                if reachable
                else (ReminderState.SKIPPED, f"partner opted out of {job.channel.value}")
            )
            fields: dict[str, object] = {
                "state": state, "last_error": reason, "final_at": now,
                "claim_token": None, "lease_until": None, "updated_at": now,
            }  # fmt: skip
            self._record(_Outcome(job, fields, state.value, now, None, reason))
            return False
        if row is not None and (row.lease_until is None or row.lease_until - now < need):
            # The token in the condition makes this safe even past the lease: a worker that
            # reclaimed the row in between has changed it, and then nothing is updated.
            until = now + max(lease, need)
            with self.db.write_engine.begin() as conn:
                renewed = conn.execute(_T.update().where(mine).values(lease_until=until))
            if renewed.rowcount != 1:
                row = None
        if row is None:
            self._count("lost_claims")
            log.warning("claim_lost_before_send", reminder_id=job.id, couple_id=job.couple_id)
            return False
        return True

    def _outcome(self, job: Job, result: Receipt | TransportError, latency: float) -> _Outcome:
        now = self.clock.now()
        fields: dict[str, object] = {"claim_token": None, "lease_until": None, "updated_at": now}
        if isinstance(result, Receipt):
            fields.update(
                state=ReminderState.SENT, provider_message_id=result.provider_id, sent_at=now,
                last_error=None,
            )  # fmt: skip
            return _Outcome(job, fields, ReminderState.SENT.value, now, latency, None)
        error = str(result)
        if result.opted_out:
            fields.update(state=ReminderState.SKIPPED, last_error=error, final_at=now)
            return _Outcome(job, fields, ReminderState.SKIPPED.value, now, latency, error, True)
        if result.permanent:
            fields.update(state=ReminderState.FAILED, last_error=error, final_at=now)
            return _Outcome(job, fields, ReminderState.FAILED.value, now, latency, error)
        delay = max(
            result.retry_after or 0.0,
            backoff.jittered(
                job.attempts, self.cfg.retry_base_seconds, self.cfg.retry_max_seconds, self.rng
            ),
        )
        retry_at = now + timedelta(seconds=delay)
        if retry_at >= job.expires_at:
            fields.update(state=ReminderState.EXPIRED, last_error=error, final_at=now)
            return _Outcome(job, fields, ReminderState.EXPIRED.value, now, latency, error)
        fields.update(state=ReminderState.SCHEDULED, next_attempt_at=retry_at, last_error=error)
        return _Outcome(job, fields, "retry", now, latency, error)

    def _ensure_finisher(self) -> None:
        with self._lock:
            if self._finisher is None or not self._finisher.is_alive():
                self._finisher = threading.Thread(
                    target=self._finish_loop, name="hearth-finish", daemon=True
                )
                self._finisher.start()

    def _finish_loop(self) -> None:
        while True:
            first = self._outcomes.get()
            batch = [first]
            while len(batch) < 1000:
                try:
                    batch.append(self._outcomes.get_nowait())
                except queue.Empty:
                    break
            try:
                self._apply_until_recorded(batch)
            finally:
                for _ in batch:
                    self._outcomes.task_done()
                with self._idle:
                    self._idle.notify_all()

    def _apply_until_recorded(self, batch: list[_Outcome]) -> None:
        """Write the outcomes, trying again while the database is busy or away: an outcome
        not written leaves its row 'sending', and once the lease runs out it is sent again.
        Every update is conditional on the claim token, so a late retry changes nothing a
        reclaiming worker owns."""
        delay = RECORD_RETRY_FIRST
        deadline = time.monotonic() + self.cfg.lease_seconds
        while True:
            try:
                self._apply(batch)
                return
            except Exception:
                if time.monotonic() + delay >= deadline:
                    log.exception("outcomes_not_recorded", count=len(batch))
                    return
                log.warning("outcomes_retrying", count=len(batch), in_s=delay, exc_info=True)
            time.sleep(delay)  # this thread only writes outcomes; the sends go on meanwhile
            delay = min(delay * 2, 10.0)

    def _apply(self, batch: list[_Outcome]) -> None:
        with self.db.write_engine.begin() as conn:
            updated = _write_outcomes(conn, batch)
            sids = [
                str(o.fields["provider_message_id"])
                for o, n in zip(batch, updated, strict=True)
                if n == 1 and o.fields.get("provider_message_id")
            ]
            try:
                with conn.begin_nested():
                    receipts.apply_parked(conn, sids, self.clock.now(), self.retry)
            except Exception:
                # Never at the cost of the outcomes: the daemon's sweep applies them later.
                log.exception("parked_receipts_not_applied", count=len(sids))
        for o, n in zip(batch, updated, strict=True):
            # The finisher is its own thread: bind the ids here too, for the opt-out's lines.
            with bound_contextvars(reminder_id=o.job.id, couple_id=o.job.couple_id):
                self._recorded(o, n)

    def _recorded(self, o: _Outcome, n: int) -> None:
        """Count and log one outcome whose update ran (``n``: rows it changed)."""
        job = o.job
        if n != 1:
            # Our lease ran out and another worker took the row: its outcome stands.
            self._count("lost_claims")
            log.warning("claim_lost", reminder_id=job.id, couple_id=job.couple_id)
            return
        if o.opted_out:
            self._record_opt_out(job, o.at)
        lateness = (o.at - job.due_at).total_seconds()
        self._count({"sent": "sent", "retry": "retried"}.get(o.outcome, o.outcome))
        if o.outcome != "retry":
            sent = o.outcome == ReminderState.SENT.value
            observe_send(job.channel.value, o.outcome, o.latency, lateness if sent else None)
        log.info(
            "reminder_" + o.outcome,
            reminder_id=job.id,
            couple_id=job.couple_id,
            channel=job.channel.value,
            attempt=job.attempts,
            lateness_s=round(lateness, 3),
            error=o.error,
        )

    def _record_opt_out(self, job: Job, now: datetime) -> None:
        with self.db.session(immediate=True) as s:
            partner = s.get(Partner, job.partner_id)
            if partner is not None and partner.phone is not None:
                partners.opt_out_sms(s, now, partner.phone, "carrier 21610")

    # -- loop -------------------------------------------------------------------------------

    def _count(self, field: str) -> None:
        with self._lock:
            setattr(self.tally, field, getattr(self.tally, field) + 1)

    def submit(self, jobs: list[Job]) -> None:
        if self.stopping.is_set():
            self._release_all(jobs)  # claimed as the stop came: back at once, unsent
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

    @property
    def in_flight(self) -> int:
        """Sends running or queued, plus outcomes not yet recorded."""
        with self._lock:
            return len(self._in_flight) + self._outcomes.unfinished_tasks

    def run_once(self, limit: int | None = None) -> Tally:
        """Claim what is due now, send it, wait for every outcome (tests, ``send-now``)."""
        before = Tally(**vars(self.tally))
        while True:
            token, ids = self.claim(limit or self.cfg.batch_size, self.caps())
            self._count_claimed(len(ids))
            jobs = self.prepare(token, ids)
            self.submit(jobs)
            self.wait_idle()
            if not ids or limit is not None:
                break
        DISPATCH_TICK.set(time.time())
        return Tally(**{k: v - getattr(before, k) for k, v in vars(self.tally).items()})

    def _count_claimed(self, n: int) -> None:
        with self._lock:
            self.tally.claimed += n

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted send has run and its outcome is recorded."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self.in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
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
            free = window - self.in_flight
            claimed = 0
            passed = True
            if free > 0:
                try:
                    token, ids = self.claim(min(free, self.cfg.batch_size), self.caps())
                    claimed = len(ids)
                    self._count_claimed(claimed)
                    self.submit(self.prepare(token, ids))
                except Exception:
                    passed = False
                    log.exception("dispatch_pass_failed")
            if passed:
                # Only a pass that worked is a tick: a loop that spins while every claim
                # fails (database down, say) must look stalled to /readyz and the alerts.
                self._ticked()
            if on_tick is not None:
                on_tick()
            if claimed and self.in_flight < window:
                continue
            wait = cap
            if not claimed and self.in_flight == 0:
                nxt = self._safe_next_due()
                if nxt is not None:
                    wait = min(cap, max(0.0, (nxt - self.clock.now()).total_seconds()))
            self._wake.wait(wait)
            self._wake.clear()

    def _ticked(self) -> None:
        """Record a successful pass: in this process's gauge each time, and in the shared
        heartbeat row (what /readyz reads, in whichever process) at most every
        HEARTBEAT_EVERY."""
        DISPATCH_TICK.set(time.time())
        now = self.clock.now()
        if self._beat_at is not None and now - self._beat_at < daemon_state.HEARTBEAT_EVERY:
            return
        try:
            with self.db.write_engine.begin() as conn:
                daemon_state.beat(conn, daemon_state.DISPATCHER, now)
        except Exception:
            log.exception("heartbeat_not_recorded")  # the next pass tries again
            return
        self._beat_at = now

    def _safe_next_due(self) -> datetime | None:
        try:
            return self.next_due()
        except Exception:
            log.exception("next_due_failed")
            return None

    def stop(self, grace: float) -> int:
        """Stop claiming; hand back at once the rows of jobs that have not started (those
        waiting for pacing wake up and do the same); give running sends ``grace`` seconds,
        recording each outcome as it comes. Returns how many were still running: each one
        records its own outcome when it ends (see :meth:`_record`)."""
        self.stopping.set()
        self._wake.set()
        with self._lock:
            queued = list(self._in_flight.items())
        self._release_all([job for fut, job in queued if fut.cancel()])
        self.wait_idle(grace)
        return self.in_flight

    def _release(self, job: Job) -> None:
        self._release_all([job])

    def _release_all(self, jobs: list[Job]) -> None:
        """Hand claimed rows back unsent, in one transaction; each only if still ours."""
        if not jobs:
            return
        now = self.clock.now()
        try:
            with self.db.write_engine.begin() as conn:
                for job in jobs:
                    conn.execute(
                        _T.update()
                        .where(
                            _T.c.id == job.id,
                            _T.c.claim_token == job.token,
                            _T.c.state == ReminderState.SENDING,
                        )
                        .values(
                            state=ReminderState.SCHEDULED,
                            claim_token=None,
                            lease_until=None,
                            attempts=_T.c.attempts - 1,
                            updated_at=now,
                        )
                    )
        except Exception:
            # Left 'sending': the lease runs out and a worker claims them again.
            log.exception("rows_not_released", count=len(jobs))
            return
        for _ in jobs:
            self._count("released")

    def close(self) -> None:
        """After :meth:`stop`. Outcomes still queued are written now; a send still running
        writes its own. Transports are closed only when no send uses them any more."""
        with self._lock:
            self._closed = True  # from here on nothing is queued for the finisher
            running = bool(self._in_flight)
        self.pool.shutdown(wait=False, cancel_futures=True)
        # The finisher is a daemon thread: let it write what it holds before the process
        # ends (bounded, should the database hang).
        deadline = time.monotonic() + 10
        with self._idle:
            while self._outcomes.unfinished_tasks and time.monotonic() < deadline:
                self._idle.wait(0.1)
        if not running:
            for t in self.transports.values():
                t.close()


def _write_outcomes(conn: sa.Connection, batch: list[_Outcome]) -> list[int]:
    """Write each outcome whose claim is still ours; return 1 or 0 per outcome, in order.

    Which claims are ours is read first, with the rows locked on PostgreSQL (SQLite's write
    transaction already excludes every other writer); the outcomes then go out as one
    ``executemany`` per shape of update, where one statement per row cost a send's worth of
    CPU again under load (docs/performance.md). Each update keeps the claim in its
    condition all the same."""
    pairs = {(o.job.id, o.job.token) for o in batch}
    held = conn.execute(
        sa.select(_T.c.id, _T.c.claim_token)
        .where(_T.c.id.in_({i for i, _ in pairs}), _T.c.state == ReminderState.SENDING)
        .order_by(_T.c.id)  # locks taken in one order: two finishers cannot deadlock
        .with_for_update()
    )
    ours = {(i, t) for i, t in held if (i, t) in pairs}
    updated: list[int] = []
    shapes: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for o in batch:
        key = (o.job.id, o.job.token)
        if key not in ours:
            updated.append(0)
            continue
        ours.discard(key)  # a second outcome for the same claim finds it settled, as in order
        updated.append(1)
        params = {"b_id": o.job.id, "b_token": o.job.token, **o.fields}
        shapes.setdefault(tuple(sorted(o.fields)), []).append(params)
    for rows in shapes.values():
        conn.execute(_OUTCOME_UPDATE, rows)
    return updated


# The SET clause comes from the keys of the parameters (one shape per executemany).
_OUTCOME_UPDATE = _T.update().where(
    _T.c.id == sa.bindparam("b_id"),
    _T.c.claim_token == sa.bindparam("b_token"),
    _T.c.state == ReminderState.SENDING,
)


@dataclass(frozen=True)
class _Verdict:
    state: ReminderState
    reason: str
    retry_at: datetime | None = None


class _Context:
    """What a batch needs besides the reminder rows, loaded once."""

    def __init__(self, s: Session, rows: list[Reminder], now: datetime) -> None:
        self.s = s
        ritual_ids = {r.ritual_id for r in rows if r.ritual_id is not None}
        partner_ids = {r.partner_id for r in rows}
        self.rituals = {
            r.id: r
            for r in s.scalars(
                sa.select(Ritual)
                .where(Ritual.id.in_(ritual_ids))
                .options(joinedload(Ritual.couple), joinedload(Ritual.exceptions))
            ).unique()
        }
        self.partners = {
            p.id: p for p in s.scalars(sa.select(Partner).where(Partner.id.in_(partner_ids)))
        }
        self.now = now
        self._pools: dict[RitualKind, list[int]] = {}
        self._keep: list[prompts.Prompt] = []
        # Rituals whose rows may take a new prompt from the rotation.
        rotating = sorted(
            {
                r.ritual_id
                for r in rows
                if r.ritual_id is not None
                and r.prompt_id is None
                and r.purpose in (ReminderPurpose.NUDGE, ReminderPurpose.SNOOZE)
            }
        )
        self._rotations = {rot.ritual_id: rot for rot in _lock_rotations(s, rotating, now)}
        self._shared: dict[tuple[int | None, datetime], int] = {}
        if rows:
            # Read after the rotation locks: a worker that prepared the other partner's row
            # of the occurrence has committed its prompt by the time we get the lock.
            # Both partners of a couple get the same prompt for the same occurrence.
            for rid, start, pid in s.execute(
                sa.select(Reminder.ritual_id, Reminder.occurrence_start, Reminder.prompt_id).where(
                    Reminder.ritual_id.in_(ritual_ids),
                    Reminder.occurrence_start.in_({r.occurrence_start for r in rows}),
                    Reminder.prompt_id.is_not(None),
                )
            ):
                if pid is not None:
                    self._shared[(rid, start)] = pid

    def pool(self, kind: RitualKind) -> list[int]:
        if kind not in self._pools:
            # Loading the kind's prompts puts them in the identity map: no query per send.
            found = list(
                self.s.scalars(
                    sa.select(prompts.Prompt).where(
                        prompts.Prompt.kind == kind, prompts.Prompt.enabled
                    )
                )
            )
            if not found:
                prompts.sync_builtin(self.s, self.now)
                found = [
                    p
                    for p in self.s.scalars(sa.select(prompts.Prompt))
                    if p.kind is kind and p.enabled
                ]
            self._keep.extend(found)  # the identity map holds objects only weakly
            self._pools[kind] = sorted(p.id for p in found)
        return self._pools[kind]

    def rotation(self, ritual_id: int, now: datetime) -> prompts.PromptRotation:
        rot = self._rotations.get(ritual_id)
        if rot is None:
            rot = prompts.PromptRotation(
                ritual_id=ritual_id, remaining=[], last_prompt_id=None, updated_at=now
            )
            self.s.add(rot)
            self._rotations[ritual_id] = rot
        return rot

    def shared_prompt(self, r: Reminder) -> int | None:
        return self._shared.get((r.ritual_id, r.occurrence_start))

    def remember_prompt(self, r: Reminder, prompt_id: int) -> None:
        self._shared[(r.ritual_id, r.occurrence_start)] = prompt_id

    def answered(self, r: Reminder) -> bool:
        """Whether the reminder's partner has reported its occurrence DONE."""
        found = self.s.scalar(
            sa.select(CheckIn.id).where(
                CheckIn.ritual_id == r.ritual_id,
                CheckIn.occurrence_start == r.occurrence_start,
                CheckIn.partner_id == r.partner_id,
            )
        )
        return found is not None


def _lock_rotations(
    s: Session, ritual_ids: list[int], now: datetime
) -> list[prompts.PromptRotation]:
    """The rituals' rotation rows, made where missing and locked until the batch commits.

    On PostgreSQL two workers may prepare the two partners' rows of one occurrence at once;
    unlocked, each would find no prompt chosen yet, each would take the next one (two
    different prompts for one evening), and the later commit would overwrite the other's
    rotation. With the lock the second waits for the first to commit, then reads its prompt
    and its rotation. Inserting first (ON CONFLICT DO NOTHING) gives a ritual's very first
    prompt a row to lock; ids in order keep two workers from deadlocking. SQLite: prepare
    runs under the one write lock already, and the same statements serve."""
    if not ritual_ids:
        return []
    t = table(prompts.PromptRotation)
    insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
    # Rows as executemany parameters, not a multi-row VALUES: that statement is compiled
    # anew for each batch size, and cost a tenth of a burst's prepare.
    s.execute(
        insert(t).on_conflict_do_nothing(index_elements=[t.c.ritual_id]),
        [
            {"ritual_id": rid, "remaining": [], "last_prompt_id": None, "updated_at": now}
            for rid in ritual_ids
        ],
    )
    return list(
        s.scalars(
            sa.select(prompts.PromptRotation)
            .where(prompts.PromptRotation.ritual_id.in_(ritual_ids))
            .order_by(prompts.PromptRotation.ritual_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


def _actual_start(ritual: Ritual, original: datetime) -> datetime:
    """When an occurrence really starts: a move's new time, else its original start."""
    for e in ritual.exceptions:
        if e.original_start == original and e.new_start is not None:
            return e.new_start
    return original


def _paused(r: Reminder, ritual: Ritual, now: datetime) -> bool:
    """The planner's rule: a message leading up to an occurrence (nudge, snooze, invitation)
    is paused when the occurrence, at its actual start, falls in the ritual's or the couple's
    pause; not when the pause merely lasts until shortly before it. A follow-up or a chase,
    sent after the occurrence, is held back by a pause that is on when it goes out."""
    after = r.purpose in (ReminderPurpose.FOLLOWUP, ReminderPurpose.CHASE)
    at = now if after else _actual_start(ritual, r.occurrence_start)
    return pauses.paused_then(ritual, at)


def _still_in_schedule(r: Reminder, ritual: Ritual) -> bool:
    """For a row that went out before (a retry, or reclaimed after a crash): replanning only
    retimes rows waiting their turn, so one that was 'sending' during an edit of the time or
    the reminder offsets may stand for an occurrence or an offset the ritual no longer has."""
    if r.purpose is ReminderPurpose.NUDGE and r.offset_minutes not in ritual.offsets:
        return False
    return is_occurrence(schedule_of(ritual), r.occurrence_start)


def _reachable(p: Partner, channel: Channel) -> bool:
    return partners.can_text(p) if channel is Channel.SMS else partners.can_email(p)


def _address(p: Partner, channel: Channel) -> str:
    value = p.phone if channel is Channel.SMS else p.email
    assert value is not None
    return value
