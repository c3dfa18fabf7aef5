"""Claiming due reminders: a conditional UPDATE under a claim token and a lease.

A claim marks rows ``sending`` with a lease and a fresh claim token (PostgreSQL: ``FOR UPDATE
SKIP LOCKED``, so several workers share the queue; SQLite: ``BEGIN IMMEDIATE``, one writer).
Every later update is conditional on that token: a row whose lease ran out and was reclaimed
by another worker cannot be finished twice. A crash, an outage or a lost answer leaves rows
``sending``; once their lease expires they are claimed again as *unknown* (``unknown_since``
set): their previous holder may have sent them, so the dispatcher asks the provider before
anything is sent again (docs/delivery.md). A live worker renews the leases it holds
(:func:`renew_held`), so its claims never go stale under it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from service.channels.base import Message, Transport
from service.db.engine import Database
from service.db.models import Channel, Partner, Reminder, ReminderState, table
from service.domain import partners
from service.outbox.gates import Quiet, Verdict

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
    lease_until: datetime | None  # as claimed
    # True: a stale claim or a lost answer; ``message`` is what was sent then, and the job
    # asks the provider for it instead of sending.
    settle: bool = False
    # The partner's quiet hours as the gates saw them: checked again right before the send,
    # which a provider's Retry-After may have held past their start.
    quiet: Quiet | None = None

    @classmethod
    def of(
        cls, r: Reminder, message: Message, settle: bool = False, quiet: Quiet | None = None
    ) -> Job:
        assert r.claim_token is not None, "a job is a claimed row"
        return cls(
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
            settle,
            quiet,
        )


def claimed_rows(s: Session, token: str, ids: list[int]) -> list[Reminder]:
    """The rows of ``ids`` still held under ``token``, in due order."""
    return list(
        s.scalars(
            sa.select(Reminder)
            .where(Reminder.id.in_(ids), Reminder.claim_token == token)
            .order_by(Reminder.next_attempt_at, Reminder.id)
        )
    )


def claim(
    db: Database,
    now: datetime,
    limit: int,
    lease_seconds: float,
    caps: Mapping[Channel, int] | None = None,
    token: str | None = None,
) -> tuple[str, list[int]]:
    """Mark up to ``limit`` due rows ``sending`` under a claim token (fresh unless given),
    at most ``caps[channel]`` of a paced channel. Returns the token and the claimed ids."""
    token = token or new_token()
    lease_until = now + timedelta(seconds=lease_seconds)
    capped = {ch: n for ch, n in (caps or {}).items() if n < limit}
    rest = [ch for ch in Channel if ch not in capped]
    ids: list[int] = []
    with db.begin() as conn:
        for ch, n in sorted(capped.items()):
            if n > 0 and len(ids) < limit:
                stmt = _claim_stmt(now, token, lease_until, min(n, limit - len(ids)), [ch])
                ids.extend(conn.scalars(stmt))
        if rest and len(ids) < limit:
            stmt = _claim_stmt(now, token, lease_until, limit - len(ids), rest if capped else None)
            ids.extend(conn.scalars(stmt))
    return token, sorted(ids)


def caps(
    transports: Mapping[Channel, Transport], queued: Mapping[Channel, int], span: float
) -> dict[Channel, int]:
    """For each paced channel, how many more of its rows a claim may take: what pacing lets
    through in ``span`` (half a lease), less what is already ``queued`` for it. Rows claimed
    beyond that would wait for pacing past their lease, and this worker or another one
    would claim them again and send them twice."""
    out: dict[Channel, int] = {}
    for ch, transport in transports.items():
        n = transport.capacity(span)
        if n is not None:
            out[ch] = max(0, n - queued.get(ch, 0))
    return out


def _claim_stmt(
    now: datetime,
    token: str,
    lease_until: datetime,
    limit: int,
    channels: list[Channel] | None,
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
            lease_until=lease_until,
            attempts=_T.c.attempts + 1,
            updated_at=now,
            # A row taken while 'sending' is a stale claim: whether it went out is unknown.
            unknown_since=sa.case(
                (_T.c.state == ReminderState.SENDING, sa.func.coalesce(_T.c.unknown_since, now)),
                else_=None,
            ),
        )
        .returning(_T.c.id)
    )


def held(job: Job) -> sa.ColumnElement[bool]:
    """The condition under which a row is still this job's claim."""
    return sa.and_(
        _T.c.id == job.id,
        _T.c.claim_token == job.token,
        _T.c.state == ReminderState.SENDING,
    )


def renew(db: Database, job: Job, until: datetime) -> bool:
    """Extend the job's lease; False when the claim is no longer ours. The token in the
    condition makes this safe even past the lease: a worker that reclaimed the row in
    between has changed it, and then nothing is updated."""
    with db.begin() as conn:
        return conn.execute(_T.update().where(held(job)).values(lease_until=until)).rowcount == 1


def recheck(
    db: Database,
    job: Job,
    now: datetime,
    need: timedelta,
    renew_for: timedelta,
    reads: GroupReads | None = None,
) -> bool | Verdict:
    """Right before every send: is the claim still ours, the reminder still fresh and its
    partner still reachable? A STOP, or a lease about to run out, may have come since the
    gates looked. One read (shared with the sends asking at the same moment, through
    ``reads``); a write only when the lease must be renewed. True: send it (a lease with
    less than ``need`` left was renewed for ``renew_for`` first). False: the claim was lost,
    leave it to whoever holds it. A :class:`Verdict`: settle the row so, unsent."""
    row = reads.read(job) if reads is not None else _read(db, [job]).get((job.id, job.token))
    if row is None:
        return False
    contact = Partner(
        phone=row.phone,
        sms_consent=row.sms_consent,
        email=row.email,
        email_opted_out_at=row.email_opted_out_at,
    )
    if not partners.still_reachable(contact, job.channel):
        return Verdict(ReminderState.SKIPPED, f"partner opted out of {job.channel.value}")
    if now >= row.expires_at:
        return Verdict(ReminderState.EXPIRED, "stale")
    if row.lease_until is None or row.lease_until - now < need:
        return renew(db, job, now + renew_for)
    return True


def _read(db: Database, jobs: Sequence[Job]) -> dict[tuple[int, str], Any]:
    """Lease, expiry and the partner's consent of each job's row still held under its
    token, in one query."""
    p = table(Partner)
    cols = (
        _T.c.id,
        _T.c.claim_token,
        _T.c.lease_until,
        _T.c.expires_at,
        p.c.phone,
        p.c.sms_consent,
        p.c.email,
        p.c.email_opted_out_at,
    )
    stmt = (
        sa.select(*cols)
        .join(p, p.c.id == _T.c.partner_id)
        .where(_T.c.id.in_([j.id for j in jobs]), _T.c.state == ReminderState.SENDING)
    )
    with db.read() as conn:
        return {(r.id, r.claim_token): r for r in conn.execute(stmt)}


class GroupReads:
    """The right-before-send reads of many sends, grouped: a send waits for a read that
    began after it asked (so it sees every STOP answered before), and one read answers all
    the sends that asked before it began. Under a burst that is one query for many sends,
    not one each; alone, a send costs one query as before."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cond = threading.Condition()
        self._asking: dict[int, Job] = {}  # ticket -> job, not yet in a read
        self._answers: dict[int, Any] = {}
        self._reading = False
        self._tickets = 0

    def read(self, job: Job) -> Any:
        with self._cond:
            ticket = self._tickets
            self._tickets += 1
            self._asking[ticket] = job
            while ticket not in self._answers:
                if not self._reading:
                    self._reading = True
                    batch, self._asking = self._asking, {}
                    self._cond.release()
                    found: dict[tuple[int, str], Any] | Exception
                    try:
                        found = _read(self.db, list(batch.values()))
                    except Exception as exc:  # every send of the batch hears of it
                        found = exc
                    finally:
                        self._cond.acquire()
                        self._reading = False
                    for t, j in batch.items():
                        self._answers[t] = (
                            found if isinstance(found, Exception) else found.get((j.id, j.token))
                        )
                    self._cond.notify_all()
                else:
                    self._cond.wait()
            answer = self._answers.pop(ticket)
        if isinstance(answer, Exception):
            raise answer
        return answer


def release(db: Database, jobs: Sequence[Job], now: datetime) -> bool:
    """Hand claimed rows back unsent, in one transaction; each only if still ours. False
    when the write failed: the rows stay 'sending' until their lease runs out."""
    if not jobs:
        return True
    try:
        with db.begin() as conn:
            for job in jobs:
                conn.execute(
                    _T.update()
                    .where(held(job), _T.c.unknown_since.is_(None))  # unknown: never unsent
                    .values(
                        state=ReminderState.SCHEDULED,
                        claim_token=None,
                        lease_until=None,
                        attempts=_T.c.attempts - 1,
                        updated_at=now,
                    )
                )
    except Exception:
        log.exception("rows_not_released", count=len(jobs))
        return False
    return True


def new_token() -> str:
    return uuid.uuid4().hex


class Stranded:
    """Claims known to be unsent that could not be handed back when that became known: the
    tokens of passes that failed after (or while) claiming, and jobs whose right-before-send
    check failed (the database went away). Their rows are handed back at the start of the
    next pass that reaches the database, instead of waiting out their lease."""

    def __init__(self) -> None:
        self._tokens: list[str] = []
        self._jobs: list[Job] = []
        self._lock = threading.Lock()

    def add(self, token: str) -> None:
        with self._lock:
            self._tokens.append(token)

    def add_job(self, job: Job) -> None:
        with self._lock:
            self._jobs.append(job)

    def __bool__(self) -> bool:
        return bool(self._tokens or self._jobs)

    def hand_back(self, db: Database, now: datetime) -> int:
        """Release every stranded claim's rows still 'sending' under it. Raises while the
        database is still away (the claims stay for the next pass)."""
        with self._lock:
            tokens, jobs = list(self._tokens), list(self._jobs)
        if jobs:
            if not release(db, jobs, now):
                raise RuntimeError("stranded claims not handed back")
            with self._lock:
                self._jobs = [j for j in self._jobs if j not in jobs]
            log.info("unsent_claims_handed_back", rows=len(jobs))
        if not tokens:
            return len(jobs)
        back = {
            "state": ReminderState.SCHEDULED,
            "claim_token": None,
            "lease_until": None,
            "attempts": _T.c.attempts - 1,
            "updated_at": now,
        }
        stmt = _T.update().where(
            _T.c.claim_token.in_(tokens),
            _T.c.state == ReminderState.SENDING,
            _T.c.unknown_since.is_(None),  # a stale claim retaken stays to be settled
        )
        with db.begin() as conn:
            n = conn.execute(stmt.values(back)).rowcount
        with self._lock:
            self._tokens = [t for t in self._tokens if t not in tokens]
        log.info("stranded_claims_handed_back", rows=n, passes=len(tokens))
        return int(n) + len(jobs)


def renew_held(db: Database, tokens: Collection[str], now: datetime, lease: timedelta) -> int:
    """Extend to a full lease from ``now`` every row still ``sending`` under one of
    ``tokens`` (the claims a live worker holds: queued, sending, or outcome unwritten);
    returns how many rows. By token, so it is safe however late it comes: a row released,
    settled or reclaimed by another worker no longer carries it."""
    if not tokens:
        return 0
    until = now + lease
    with db.begin() as conn:
        # Locked in id order, as the outcome writes lock them: the two cannot deadlock.
        ids = (
            sa.select(_T.c.id)
            .where(
                _T.c.claim_token.in_(sorted(tokens)),
                _T.c.state == ReminderState.SENDING,
                _T.c.lease_until < until,
            )
            .order_by(_T.c.id)
            .with_for_update()
        )
        stmt = _T.update().where(_T.c.id.in_(ids.scalar_subquery())).values(lease_until=until)
        return int(conn.execute(stmt).rowcount)


def next_due(db: Database) -> datetime | None:
    """When the earliest scheduled row is due (None: nothing scheduled)."""
    with db.read() as conn:
        return conn.scalar(
            sa.select(sa.func.min(_T.c.next_attempt_at)).where(
                _T.c.state == ReminderState.SCHEDULED
            )
        )
