"""Delivery receipts (Twilio status callbacks) applied to the outbox, idempotent and in any
order: a final state is never left, a duplicate changes nothing.

A receipt can arrive before the worker has recorded the send: the Message SID is written in
the batched outcome write, after the provider answered. Such an early receipt is parked in
``early_receipt``. The outcome write applies the parked receipts for the SIDs it records, and
since on PostgreSQL the two transactions can pass each other unseen, the daemon's periodic
:func:`sweep` applies any parked receipt whose SID has been recorded since.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from service.channels.twilio_codes import OPTED_OUT, PERMANENT, TRANSIENT
from service.db import optouts
from service.db.models import EarlyReceipt, Partner, Reminder, ReminderState, table
from service.db.states import FINAL_STATES
from service.domain import partners
from service.outbox.backoff import Policy

STATUS_MAP = {
    "delivered": ReminderState.DELIVERED,
    "undelivered": ReminderState.UNDELIVERED,
    "failed": ReminderState.FAILED,
    "sent": ReminderState.SENT,
}
_RANK = {ReminderState.SENDING: 0, ReminderState.SENT: 1}  # finals rank above both
PARK_DAYS = 2  # Twilio reports within minutes; older parked receipts match nothing we sent
_R = table(Reminder)
_E = table(EarlyReceipt)


def apply(
    conn: Connection,
    sid: str,
    status: str,
    error: str | None,
    now: datetime,
    resend_in: Policy | None = None,
) -> str:
    """Apply one status callback; returns the outcome for the webhook metric.

    Twilio reports some failures only here, after it accepted the message: a permanent
    code (unknown handset, landline) makes the reminder ``failed``; a transient one (handset
    unreachable) sends it again after ``resend_in(attempts)`` if that is before its expiry;
    21610 (the number texted STOP) opts the number out as a STOP here would.
    """
    new = STATUS_MAP.get(status)
    if new is None:
        return "ignored"  # queued, sending, accepted...: nothing the outbox records
    row = conn.execute(
        sa.select(_R.c.id, _R.c.state, _R.c.attempts, _R.c.expires_at, _R.c.partner_id).where(
            _R.c.provider_message_id == sid
        )
    ).first()
    if row is None:
        if new not in FINAL_STATES:
            return "unknown_message"  # a parked 'sent' would change nothing
        return "parked" if _park(conn, sid, new, error, now) else "duplicate"
    state = ReminderState(row.state)
    code = error_code(error)
    if code in OPTED_OUT:
        _opt_out(conn, row.partner_id, now)
    if new in (ReminderState.UNDELIVERED, ReminderState.FAILED) and code is not None:
        if code in PERMANENT:
            new = ReminderState.FAILED
        elif code in TRANSIENT and resend_in is not None and state not in FINAL_STATES:
            at = now + resend_in(row.attempts)
            if at < row.expires_at:
                return _resend(conn, row.id, sid, state, at, error, now)
    return _update(conn, row.id, sid, state, new, error, now)


def _opt_out(conn: Connection, partner_id: int, now: datetime) -> None:
    # The ORM rules for consent (history, events, cancelling pending texts) in this
    # transaction: a session joined to the connection, flushed, never committing on its own;
    # "rollback_only" so closing it keeps its work even inside the caller's savepoint.
    with Session(bind=conn, join_transaction_mode="rollback_only") as s:
        phone = s.scalar(sa.select(Partner.phone).where(Partner.id == partner_id))
        if phone is not None:
            partners.opt_out_sms(s, now, phone, "carrier 21610")
            s.flush()
            optouts.carry(s, conn)  # the session never commits: the connection's commit counts


def error_code(error: str | None) -> int | None:
    try:
        return int(error) if error else None
    except ValueError:
        return None


def _resend(
    conn: Connection,
    rid: int,
    sid: str,
    state: ReminderState,
    at: datetime,
    error: str | None,
    now: datetime,
) -> str:
    # The SID in the condition: a receipt for an earlier send never touches a later one.
    conn.execute(
        _R.update()
        .where(_R.c.id == rid, _R.c.provider_message_id == sid, _R.c.state == state)
        .values(
            state=ReminderState.SCHEDULED,
            next_attempt_at=at,
            provider_message_id=None,
            claim_token=None,
            lease_until=None,
            last_error=_error(error),
            updated_at=now,
        )
    )
    return "retried"


def apply_parked(
    conn: Connection, sids: list[str], now: datetime, resend_in: Policy | None = None
) -> int:
    """Apply the receipts that arrived before these SIDs were recorded; returns how many."""
    if not sids:
        return 0
    parked = conn.execute(sa.select(_E).where(_E.c.sid.in_(sids))).all()
    for p in parked:
        apply(conn, p.sid, p.state, p.error, now, resend_in)
    if parked:
        conn.execute(_E.delete().where(_E.c.sid.in_([p.sid for p in parked])))
    return len(parked)


def sweep(conn: Connection, now: datetime, resend_in: Policy | None = None) -> int:
    """Apply every parked receipt whose send has been recorded since it was parked."""
    sids = list(
        conn.scalars(sa.select(_E.c.sid).join(_R, _R.c.provider_message_id == _E.c.sid).limit(1000))
    )
    return apply_parked(conn, sids, now, resend_in)


def prune(conn: Connection, now: datetime) -> int:
    """Forget parked receipts that never matched a send (another system's messages)."""
    old = _E.c.received_at < now - timedelta(days=PARK_DAYS)
    return int(conn.execute(_E.delete().where(old)).rowcount)


def _park(conn: Connection, sid: str, new: ReminderState, error: str | None, now: datetime) -> bool:
    if conn.execute(sa.select(_E.c.sid).where(_E.c.sid == sid)).first() is not None:
        return False  # the first final report stands, as on a recorded reminder
    try:
        with conn.begin_nested():
            conn.execute(
                _E.insert().values(
                    sid=sid, state=new.value, error=error and error[:300], received_at=now
                )
            )
    except sa.exc.IntegrityError:
        return False  # a concurrent duplicate parked it first
    return True


def _update(
    conn: Connection,
    rid: int,
    sid: str,
    state: ReminderState,
    new: ReminderState,
    error: str | None,
    now: datetime,
) -> str:
    if state in FINAL_STATES or state == new:
        return "duplicate"
    if new is ReminderState.SENT and _RANK.get(state, 2) >= 1:
        return "duplicate"
    values: dict[str, object] = {"state": new, "updated_at": now}
    if new in FINAL_STATES:
        values["final_at"] = now
    if error:
        values["last_error"] = _error(error)
    conn.execute(
        _R.update()
        .where(_R.c.id == rid, _R.c.provider_message_id == sid, _R.c.state.not_in(FINAL_STATES))
        .values(**values)
    )
    return "ok"


def _error(error: str | None) -> str | None:
    return f"twilio {error}"[:300] if error else None  # the column's width
