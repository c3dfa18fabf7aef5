"""The send-time route check: a nudge on a partner's fallback channel goes only when the
preferred channel could not deliver it (service/domain/routing.py has the order).

Read at send time from the partner's current order, so rows planned before the order existed
(two rows for one moment) obey it too. For a row behind other channels of the same nudge:

- one of them was sent or delivered: this one is dropped (``covered by sms``);
- all of them failed, were refused, expired or were cancelled (STOP), or none was planned: it
  goes;
- one is still waiting or in flight: it waits until ``fallback_after`` past that one's due
  time (or just before its own expiry), and while a worker holds it (its lease runs); then it
  takes over: a waiting one is cancelled, and one still unknown that long after (its worker
  gone) is given up on (the partner may then get both).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import Partner, Reminder, ReminderPurpose, ReminderState, Ritual
from service.domain.routing import order
from service.outbox.gates import Verdict

_COVERED = (ReminderState.SENT, ReminderState.DELIVERED)
_WAITING = (ReminderState.SCHEDULED, ReminderState.SENDING)
# A standby takes over at the latest this long before it would expire itself.
_LAST_CHANCE = timedelta(seconds=15)


def check(
    s: Session,
    r: Reminder,
    partner: Partner,
    ritual: Ritual | None,
    now: datetime,
    fallback_after: timedelta,
) -> Verdict | None:
    """None: ``r`` may go now; else the verdict that drops or defers it."""
    if r.purpose is not ReminderPurpose.NUDGE or ritual is None or partner.both_channels:
        return None
    route = order([c.value for c in ritual.channel_list], [c.value for c in partner.channel_list])
    if r.channel.value not in route:
        return None
    ahead = route[: route.index(r.channel.value)]
    if not ahead:
        return None
    rows = s.execute(
        sa.select(
            Reminder.id, Reminder.channel, Reminder.state, Reminder.due_at, Reminder.lease_until
        ).where(
            Reminder.ritual_id == r.ritual_id,
            Reminder.occurrence_start == r.occurrence_start,
            Reminder.partner_id == r.partner_id,
            Reminder.offset_minutes == r.offset_minutes,
            Reminder.purpose == ReminderPurpose.NUDGE,
            Reminder.channel.in_(ahead),
        )
    ).all()
    covered = [row for row in rows if row.state in _COVERED]
    if covered:
        return Verdict(ReminderState.CANCELLED, f"covered by {covered[0].channel.value}")
    waiting = [row for row in rows if row.state in _WAITING]
    if not waiting:
        return None
    deadline = min(max(row.due_at for row in waiting) + fallback_after, r.expires_at - _LAST_CHANCE)
    # One being sent right now (its worker's lease runs) is not unknown yet: its outcome
    # comes within the lease. Only one whose lease ran out is given up on.
    held = [row.lease_until for row in waiting if row.lease_until and row.lease_until > now]
    if held and now < r.expires_at - _LAST_CHANCE:
        deadline = max(deadline, min(max(held), r.expires_at - _LAST_CHANCE))
    if now < deadline:
        return Verdict(ReminderState.SCHEDULED, f"waiting for {waiting[0].channel.value}", deadline)
    # Undeliverable in time: the preferred row that has not left is stood down, under the
    # condition that it is still waiting (a worker that claimed it meanwhile keeps it).
    s.execute(
        sa.update(Reminder)
        .where(
            Reminder.id.in_([row.id for row in waiting]),
            Reminder.state == ReminderState.SCHEDULED,
        )
        .values(
            state=ReminderState.CANCELLED,
            last_error=f"fell back to {r.channel.value}",
            final_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return None
