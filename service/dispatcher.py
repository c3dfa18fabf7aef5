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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, joinedload

from service import messages, partners, prompts, receipts
from service.app import Hearth
from service.channels.base import Message, Receipt, Transport, TransportError
from service.metrics import DISPATCH_TICK, observe_send
from service.models import (
    Channel,
    ConsentState,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
    RitualKind,
    table,
)
from service.timeutil import in_quiet_hours, quiet_hours_end, zone

log = structlog.get_logger("hearth.dispatch")
_T = table(Reminder)


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


@dataclass
class _Outcome:
    job: Job
    fields: dict[str, object]
    outcome: str  # a final state's value, or "retry"
    at: datetime
    latency: float
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


def backoff(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: between half and all of base * 2^(attempts-1)."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return rng.uniform(delay / 2, delay)


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
        self.worker_id = worker_id or uuid.uuid4().hex[:8]
        self.pool = ThreadPoolExecutor(
            max_workers=self.cfg.concurrency, thread_name_prefix="hearth-send"
        )
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: set[Future[None]] = set()
        self.tally = Tally()
        self._wake = threading.Event()
        self._outcomes: queue.Queue[_Outcome] = queue.Queue()
        self._finisher: threading.Thread | None = None
        self._idle = threading.Condition()

    # -- claiming ---------------------------------------------------------------------------

    def claim(self, limit: int) -> tuple[str, list[int]]:
        """Mark up to ``limit`` due rows ``sending`` under a fresh claim token."""
        now = self.clock.now()
        token = uuid.uuid4().hex
        due = sa.or_(
            sa.and_(_T.c.state == ReminderState.SCHEDULED, _T.c.next_attempt_at <= now),
            sa.and_(_T.c.state == ReminderState.SENDING, _T.c.lease_until < now),
        )
        pick = (
            sa.select(_T.c.id)
            .where(due)
            .order_by(_T.c.next_attempt_at, _T.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            _T.update()
            .where(_T.c.id.in_(pick.scalar_subquery()))
            .values(
                state=ReminderState.SENDING,
                claim_token=token,
                lease_until=now + timedelta(seconds=self.cfg.lease_seconds),
                attempts=_T.c.attempts + 1,
                updated_at=now,
            )
            .returning(_T.c.id)
        )
        with self.db.write_engine.begin() as conn:
            ids = sorted(conn.scalars(stmt))
        return token, ids

    def next_due(self) -> datetime | None:
        with self.db.engine.connect() as conn:
            return conn.scalar(
                sa.select(sa.func.min(_T.c.next_attempt_at)).where(
                    _T.c.state == ReminderState.SCHEDULED
                )
            )

    # -- send-time checks -------------------------------------------------------------------

    def prepare(self, token: str, ids: list[int]) -> list[Job]:
        """Apply the send-time gates in order (paused, opted out, stale, quiet hours), settle
        the rows that must not be sent, and render the rest."""
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
        elif ritual.couple.is_paused(now) or ritual.is_paused(now):
            return _Verdict(ReminderState.SKIPPED, "paused")
        elif r.purpose is ReminderPurpose.NUDGE and (
            r.occurrence_start
            in {e.original_start for e in ritual.exceptions if e.new_start is None}
            or (ritual.ended_at is not None and ritual.ended_at <= r.occurrence_start)
        ):
            return _Verdict(ReminderState.CANCELLED, "occurrence no longer planned")
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
            message = messages.notice(r.body, r.channel, _address(partner, r.channel), r.id)
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
        unsubscribe = (
            f"{base}/unsubscribe/{partner.unsubscribe_token}" if partner.unsubscribe_token else None
        )
        mctx = messages.Context(
            ritual, partner, r.purpose, r.occurrence_start, prompt_text, unsubscribe
        )
        message = messages.render(mctx, r.channel, _address(partner, r.channel), r.id)
        r.body = message.text
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
        )

    # -- sending ----------------------------------------------------------------------------

    def send(self, job: Job) -> None:
        """Send one job and record its outcome (runs in a worker thread)."""
        if self.stopping.is_set():
            self._release(job)
            return
        transport = self.transports[job.channel]
        started = time.monotonic()
        try:
            receipt: Receipt | TransportError = transport.send(job.message)
        except TransportError as exc:
            receipt = exc
        except Exception as exc:  # a bug or an unexpected library error: retry, loudly
            log.exception("channel_crashed", reminder_id=job.id, channel=job.channel.value)
            receipt = TransportError(f"unexpected {type(exc).__name__}")
        latency = time.monotonic() - started
        self.finish(job, receipt, latency)

    def finish(self, job: Job, result: Receipt | TransportError, latency: float) -> None:
        """Queue the outcome for the finisher, which records outcomes in batches: one write
        transaction for many sends, instead of many threads queueing for SQLite's one lock."""
        self._outcomes.put(self._outcome(job, result, latency))
        self._ensure_finisher()

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
            backoff(
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
                self._apply(batch)
            except Exception:
                # The rows stay 'sending'; their lease runs out and they are sent again.
                log.exception("outcomes_not_recorded", count=len(batch))
            finally:
                for _ in batch:
                    self._outcomes.task_done()
                with self._idle:
                    self._idle.notify_all()

    def _apply(self, batch: list[_Outcome]) -> None:
        updated: list[int] = []
        with self.db.write_engine.begin() as conn:
            for o in batch:
                stmt = (
                    _T.update()
                    .where(
                        _T.c.id == o.job.id,
                        _T.c.claim_token == o.job.token,
                        _T.c.state == ReminderState.SENDING,
                    )
                    .values(**o.fields)
                )
                updated.append(conn.execute(stmt).rowcount)
            sids = [
                str(o.fields["provider_message_id"])
                for o, n in zip(batch, updated, strict=True)
                if n == 1 and o.fields.get("provider_message_id")
            ]
            try:
                with conn.begin_nested():
                    receipts.apply_parked(conn, sids, self.clock.now())
            except Exception:
                # Never at the cost of the outcomes: the daemon's sweep applies them later.
                log.exception("parked_receipts_not_applied", count=len(sids))
        for o, n in zip(batch, updated, strict=True):
            job = o.job
            if n != 1:
                # Our lease ran out and another worker took the row: its outcome stands.
                self._count("lost_claims")
                log.warning("claim_lost", reminder_id=job.id, couple_id=job.couple_id)
                continue
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
            if partner is not None and partner.sms_consent is not ConsentState.OPTED_OUT:
                partners.set_consent(s, now, partner, ConsentState.OPTED_OUT, "carrier 21610")

    # -- loop -------------------------------------------------------------------------------

    def _count(self, field: str) -> None:
        with self._lock:
            setattr(self.tally, field, getattr(self.tally, field) + 1)

    def submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            fut = self.pool.submit(self.send, job)
            with self._lock:
                self._in_flight.add(fut)
            fut.add_done_callback(self._done)

    def _done(self, fut: Future[None]) -> None:
        with self._lock:
            self._in_flight.discard(fut)
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
            token, ids = self.claim(limit or self.cfg.batch_size)
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
            if free > 0:
                try:
                    token, ids = self.claim(min(free, self.cfg.batch_size))
                    claimed = len(ids)
                    self._count_claimed(claimed)
                    self.submit(self.prepare(token, ids))
                except Exception:
                    log.exception("dispatch_pass_failed")
            DISPATCH_TICK.set(time.time())
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

    def _safe_next_due(self) -> datetime | None:
        try:
            return self.next_due()
        except Exception:
            log.exception("next_due_failed")
            return None

    def stop(self, grace: float) -> int:
        """Stop claiming; queued jobs hand their rows back unsent, running sends get ``grace``
        seconds. Returns how many sends were still running (their rows stay ``sending`` and
        are reclaimed once the lease runs out)."""
        self.stopping.set()
        self._wake.set()
        self.wait_idle(grace)
        return self.in_flight

    def _release(self, job: Job) -> None:
        now = self.clock.now()
        with self.db.write_engine.begin() as conn:
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
        self._count("released")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for t in self.transports.values():
            t.close()


@dataclass(frozen=True)
class _Verdict:
    state: ReminderState
    reason: str
    retry_at: datetime | None = None


class _Context:
    """What a batch needs besides the reminder rows, loaded once."""

    def __init__(self, s: Session, rows: list[Reminder], now: datetime) -> None:
        from service.models import Ritual

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
        self._rotations = {
            r.ritual_id: r
            for r in s.scalars(
                sa.select(prompts.PromptRotation).where(
                    prompts.PromptRotation.ritual_id.in_(ritual_ids)
                )
            )
        }
        self._shared: dict[tuple[int | None, datetime], int] = {}
        if rows:
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


def _reachable(p: Partner, channel: Channel) -> bool:
    if channel is Channel.SMS:
        return bool(p.phone) and p.sms_consent is ConsentState.CONSENTED
    return bool(p.email) and p.email_opted_out_at is None


def _address(p: Partner, channel: Channel) -> str:
    value = p.phone if channel is Channel.SMS else p.email
    assert value is not None
    return value
