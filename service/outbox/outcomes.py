"""Outcomes of sends: classified once, written in batches, counted and logged.

A send's result (a receipt or a :class:`TransportError`) becomes an :class:`Outcome`: the
row's new state, a retry after the backoff, or *unknown* (the answer was lost: the row stays
``sending`` and is settled with the provider once its lease runs out, never sent again
before). :class:`finisher.Finisher` writes them, many
per transaction (:func:`apply`). Every update is conditional on the claim token, so a late
write changes nothing a reclaiming worker owns.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session
from structlog.contextvars import bound_contextvars

from service.channels.base import Receipt, TransportError
from service.core.config import DaemonSettings
from service.core.metrics import observe_send
from service.db.engine import Database
from service.db.models import Partner, Reminder, ReminderState, table
from service.domain import partners
from service.outbox import backoff, receipts
from service.outbox.claims import Job
from service.outbox.gates import Verdict

log = structlog.get_logger("hearth.dispatch")
_T = table(Reminder)
# How long past its expiry an unknown send is still asked about while the provider cannot
# answer; then it is settled as failed, its reason on the row.
SETTLE_GIVE_UP = timedelta(days=1)


@dataclass
class Outcome:
    job: Job
    fields: dict[str, object]
    outcome: str  # a final state's value, "retry", "deferred" or "unknown"
    at: datetime
    latency: float | None  # None: nothing was sent
    error: str | None
    opted_out: bool = False


@dataclass
class Tally:
    """What a dispatcher did, counted as it happens (thread-safe through :meth:`add`)."""

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
    unknown: int = 0  # answers lost: settled with the provider later
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def since(self, before: Tally) -> Tally:
        """The counts added after ``before`` (a copy taken earlier)."""
        names = [f.name for f in fields(self) if not f.name.startswith("_")]
        return Tally(**{n: getattr(self, n) - getattr(before, n) for n in names})

    def copy(self) -> Tally:
        return self.since(Tally())


def classify(
    job: Job,
    result: Receipt | TransportError,
    latency: float | None,
    now: datetime,
    cfg: DaemonSettings,
    rng: random.Random,
) -> Outcome:
    """What a send's result (or a settling lookup's) means for its row."""
    changes: dict[str, object] = {"claim_token": None, "lease_until": None, "updated_at": now}
    if isinstance(result, Receipt):
        changes.update(
            state=ReminderState.SENT,
            provider_message_id=result.provider_id,
            sent_at=now,
            last_error=None,
            unknown_since=None,
        )
        return Outcome(job, changes, ReminderState.SENT.value, now, latency, None)
    error = str(result)
    if job.settle and (result.permanent or now >= job.expires_at + SETTLE_GIVE_UP):
        # The provider refuses to be asked (credentials, say) or has not answered for a day:
        # final, with the reason in sight, rather than unknown for ever. Never sent again.
        changes.update(
            state=ReminderState.FAILED, last_error=f"outcome unknown: {error}", final_at=now
        )
        return Outcome(job, changes, ReminderState.FAILED.value, now, latency, error)
    if result.unknown or job.settle:
        # The provider may have the message: no resend before it has been asked, a lease
        # from now (time for a request on its way to be taken). Unclaimed, so any worker
        # settles it then.
        changes["lease_until"] = now + timedelta(seconds=cfg.lease_seconds)
        changes["last_error"] = error
        if not job.settle:
            changes["unknown_since"] = now
        return Outcome(job, changes, "unknown", now, latency, error)
    if result.opted_out:
        changes.update(state=ReminderState.SKIPPED, last_error=error, final_at=now)
        return Outcome(job, changes, ReminderState.SKIPPED.value, now, latency, error, True)
    if result.permanent:
        changes.update(state=ReminderState.FAILED, last_error=error, final_at=now)
        return Outcome(job, changes, ReminderState.FAILED.value, now, latency, error)
    delay = max(
        result.retry_after or 0.0,
        backoff.jittered(job.attempts, cfg.retry_base_seconds, cfg.retry_max_seconds, rng),
    )
    retry_at = now + timedelta(seconds=delay)
    if retry_at >= job.expires_at:
        changes.update(state=ReminderState.EXPIRED, last_error=error, final_at=now)
        return Outcome(job, changes, ReminderState.EXPIRED.value, now, latency, error)
    changes.update(state=ReminderState.SCHEDULED, next_attempt_at=retry_at, last_error=error)
    return Outcome(job, changes, "retry", now, latency, error)


def not_at_provider(job: Job, now: datetime) -> Outcome:
    """A settled unknown send the provider has no record of: it was never sent, so it is
    due again at once (through the send-time gates, like any other row)."""
    changes: dict[str, object] = {
        "state": ReminderState.SCHEDULED,
        "next_attempt_at": now,
        "unknown_since": None,
        "last_error": "not at the provider: sent again",
        "attempts": max(0, job.attempts - 1),  # a lookup is not a delivery attempt
        "claim_token": None,
        "lease_until": None,
        "updated_at": now,
    }
    return Outcome(job, changes, "retry", now, None, None)


def settled(job: Job, v: Verdict, now: datetime) -> Outcome:
    """An outcome for a job stopped right before its send (nothing was sent): final, or
    deferred to ``v.retry_at`` (quiet hours began while the send was held)."""
    changes: dict[str, object] = {
        "state": v.state,
        "last_error": v.reason,
        "claim_token": None,
        "lease_until": None,
        "updated_at": now,
    }
    if v.retry_at is not None:
        changes["next_attempt_at"] = v.retry_at
        changes["attempts"] = max(0, job.attempts - 1)  # a deferral is not a delivery attempt
        return Outcome(job, changes, "deferred", now, None, v.reason)
    changes["final_at"] = now
    return Outcome(job, changes, v.state.value, now, None, v.reason)


def write(conn: sa.Connection, batch: list[Outcome]) -> list[int]:
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


def report(o: Outcome, written: int, tally: Tally) -> None:
    """Count and log one outcome whose update ran (``written``: rows it changed)."""
    job = o.job
    if written != 1:
        # Our lease ran out and another worker took the row: its outcome stands.
        tally.add("lost_claims")
        log.warning("claim_lost", reminder_id=job.id, couple_id=job.couple_id)
        return
    lateness = (o.at - job.due_at).total_seconds()
    tally.add({"sent": "sent", "retry": "retried"}.get(o.outcome, o.outcome))
    if o.outcome not in ("retry", "unknown", "deferred"):
        sent = o.outcome == ReminderState.SENT.value
        observe_send(job.channel.value, o.outcome, o.latency, lateness if sent else None, o.error)
    log.info(
        "reminder_" + o.outcome,
        reminder_id=job.id,
        couple_id=job.couple_id,
        channel=job.channel.value,
        attempt=job.attempts,
        lateness_s=round(lateness, 3),
        error=o.error,
        **({"settled": True} if job.settle else {}),
    )


def apply(
    db: Database, batch: list[Outcome], now: datetime, retry: backoff.Policy, tally: Tally
) -> None:
    """Write a batch of outcomes, then apply receipts parked for the sends they record, then
    count and log each (an opt-out the provider reported becomes a STOP)."""
    with db.begin() as conn:
        written = write(conn, batch)
        sids = [
            str(o.fields["provider_message_id"])
            for o, n in zip(batch, written, strict=True)
            if n == 1 and o.fields.get("provider_message_id")
        ]
        try:
            with conn.begin_nested():
                receipts.apply_parked(conn, sids, now, retry)
        except Exception:
            # Never at the cost of the outcomes: the daemon's sweep applies them later.
            log.exception("parked_receipts_not_applied", count=len(sids))
    for o, n in zip(batch, written, strict=True):
        # The finisher is its own thread: bind the ids here too, for the opt-out's lines.
        with bound_contextvars(reminder_id=o.job.id, couple_id=o.job.couple_id):
            if n == 1 and o.opted_out:
                with db.session(immediate=True) as s:
                    _opt_out(s, o.job.partner_id, o.at)
            report(o, n, tally)


def _opt_out(s: Session, partner_id: int, now: datetime) -> None:
    """The provider says the number opted out (Twilio 21610): record it as a STOP."""
    partner = s.get(Partner, partner_id)
    if partner is not None and partner.phone is not None:
        partners.opt_out_sms(s, now, partner.phone, "carrier 21610")


def settle_row(r: Reminder, v: Verdict, now: datetime, tally: Tally) -> None:
    """Settle a row a send-time gate stopped (in the caller's transaction): final, or
    deferred to ``v.retry_at``."""
    r.state, r.last_error, r.claim_token, r.lease_until = v.state, v.reason, None, None
    r.updated_at = now
    if v.retry_at is not None:
        r.next_attempt_at = v.retry_at
        r.attempts = max(0, r.attempts - 1)  # a deferral is not a delivery attempt
        tally.add("deferred")
    else:
        r.final_at = now
        tally.add(v.state.value)
        observe_send(r.channel.value, v.state.value, None, None, v.reason)
    log.info(
        "reminder_" + ("deferred" if v.retry_at else v.state.value),
        reminder_id=r.id,
        couple_id=r.couple_id,
        channel=r.channel.value,
        reason=v.reason,
    )
