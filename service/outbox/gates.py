"""Send-time gates: pure checks of a claimed reminder against the state it depends on.

Applied in order right before a reminder is rendered: paused; occurrence no longer planned;
a chase already answered; opted out; stale; quiet hours. A gate either lets the reminder
through (``None``) or returns the :class:`Verdict` that settles its row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from service.core.timeutil import in_quiet_hours, quiet_hours_end, zone
from service.db.models import (
    Channel,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
    Ritual,
    RitualKind,
)
from service.db.states import ONE_OFF_PURPOSES
from service.domain import partners, pauses
from service.domain.recurrence import is_occurrence, schedule_of

# The night for repair texts to a partner without quiet hours of their own: nobody is told
# of a hard talk in the middle of the night (the repair planner picks times by it too).
REPAIR_NIGHT = (time(22, 0), time(8, 0))


# How long after a ritual's edit a newly planned row is known to reflect it (see
# :func:`still_in_schedule`).
EDIT_SETTLED = timedelta(minutes=5)


@dataclass(frozen=True)
class Verdict:
    state: ReminderState
    reason: str
    retry_at: datetime | None = None  # set: deferred to then (still scheduled)


@dataclass(frozen=True)
class Quiet:
    """A partner's quiet hours as a reminder meets them, in the partner's zone."""

    tz: ZoneInfo
    start: time
    end: time

    @classmethod
    def of(cls, partner: Partner, ritual: Ritual | None) -> Quiet | None:
        qs, qe = partner.quiet_start, partner.quiet_end
        if (qs is None or qe is None) and ritual is not None and ritual.kind is RitualKind.REPAIR:
            qs, qe = REPAIR_NIGHT
        return None if qs is None or qe is None else cls(zone(partner.timezone), qs, qe)

    def hold(self, now: datetime, expires_at: datetime) -> Verdict | None:
        """None outside the quiet hours; inside, deferred to their end, or expired when the
        reminder is stale by then."""
        if not in_quiet_hours(now, self.tz, self.start, self.end):
            return None
        end = quiet_hours_end(now, self.tz, self.start, self.end)
        if end < expires_at:
            return Verdict(ReminderState.SCHEDULED, "quiet hours", retry_at=end)
        return Verdict(ReminderState.EXPIRED, "quiet hours until past expiry")


def check(
    r: Reminder,
    partner: Partner,
    ritual: Ritual | None,
    now: datetime,
    answered: Callable[[Reminder], bool],
) -> Verdict | None:
    """The first gate that stops ``r`` now, or None. ``answered`` tells whether the
    reminder's partner already reported its occurrence DONE (asked only for a chase)."""
    if r.purpose in ONE_OFF_PURPOSES:  # a reply's message goes out while paused
        if r.purpose is ReminderPurpose.NOTICE and held_by_pause(r, partner, now):
            return Verdict(ReminderState.SKIPPED, "paused")
    elif ritual is None:
        return Verdict(ReminderState.CANCELLED, "ritual removed")
    elif paused(r, ritual, now):
        return Verdict(ReminderState.SKIPPED, "paused")
    elif (  # any message about an occurrence: nudge, snooze, invitation, follow-up
        r.occurrence_start in {e.original_start for e in ritual.exceptions if e.new_start is None}
        or (ritual.ended_at is not None and ritual.ended_at <= r.occurrence_start)
        or not still_in_schedule(r, ritual)
    ):
        return Verdict(ReminderState.CANCELLED, "occurrence no longer planned")
    elif r.purpose is ReminderPurpose.CHASE and answered(r):
        return Verdict(ReminderState.SKIPPED, "already done")
    if not partners.can_receive(partner, r.channel, r.purpose):
        return Verdict(ReminderState.SKIPPED, f"partner opted out of {r.channel.value}")
    if now >= r.expires_at:
        return Verdict(ReminderState.EXPIRED, "stale")
    quiet = Quiet.of(partner, ritual)
    return quiet.hold(now, r.expires_at) if quiet is not None else None


def held_by_pause(r: Reminder, partner: Partner, now: datetime) -> bool:
    """A pause holds back the notices queued before it began. What is told because of it
    or during it (the pause notice itself, the talk it called off) must reach the partner:
    otherwise "we've told your partner" would be untrue."""
    couple = partner.couple
    return (
        couple.is_paused(now) and couple.paused_at is not None and r.created_at < couple.paused_at
    )


def actual_start(ritual: Ritual, original: datetime) -> datetime:
    """When an occurrence really starts: a move's new time, else its original start."""
    for e in ritual.exceptions:
        if e.original_start == original and e.new_start is not None:
            return e.new_start
    return original


def paused(r: Reminder, ritual: Ritual, now: datetime) -> bool:
    """The planner's rule: a message leading up to an occurrence (nudge, snooze, invitation)
    is paused when the occurrence, at its actual start, falls in the ritual's or the couple's
    pause; not when the pause merely lasts until shortly before it. A follow-up or a chase,
    sent after the occurrence, is held back by a pause that is on when it goes out."""
    after = r.purpose in (ReminderPurpose.FOLLOWUP, ReminderPurpose.CHASE)
    at = now if after else actual_start(ritual, r.occurrence_start)
    return pauses.paused_then(ritual, at)


def still_in_schedule(r: Reminder, ritual: Ritual) -> bool:
    """Whether the row still stands for an occurrence and offset the ritual has. Checked on
    every send, the first too: the replan after an edit of the time or the offsets may not
    have run yet (the daemon reacts a poll later, or was down), and a row that was 'sending'
    during the edit is never retimed.

    A row planned well after the ritual's last edit was planned from its current schedule
    (an edit's transaction is far shorter than :data:`EDIT_SETTLED`): it is let through
    without expanding the rule, which costs up to milliseconds (a daily ritual begun two
    years ago: ~7 ms) and would be paid on every send."""
    if r.created_at >= ritual.updated_at + EDIT_SETTLED:
        return True
    if r.purpose is ReminderPurpose.NUDGE and r.offset_minutes not in ritual.offsets:
        return False
    return is_occurrence(schedule_of(ritual), r.occurrence_start)


def address(p: Partner, channel: Channel) -> str:
    value = p.phone if channel is Channel.SMS else p.email
    assert value is not None
    return value
