"""Who a ritual's nudges reach, and when: the quiet-hours rule told ahead of time.

The planner and the send-time gates apply the rule (``outbox/planner.py``, ``outbox/gates.py``);
this module says in advance what they will do, for the warnings of the commands that create
the situation (``ritual add/edit``, ``partner add/edit``, ``couple edit``), the marks of
``ritual preview`` and ``hearth doctor``. A nudge due inside a partner's quiet hours goes out
just before they begin when that is at most ``early`` ahead; else when they end, if it is
still fresh then; else it cannot be delivered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from service.core.timeutil import before_quiet_hours, in_quiet_hours, quiet_hours_end, zone
from service.db.models import Channel, ConsentState, Couple, Partner, Ritual
from service.domain import pauses
from service.domain.recurrence import nudge_anchor, occurrences, schedule_of

# How far ahead the warnings look: a week covers every weekly pattern.
LOOKAHEAD = timedelta(days=8)


def stale_after(duration_minutes: int, stale_minutes: float) -> timedelta:
    """How long after its due time a nudge is still worth sending: half the ritual's length
    or ``stale_minutes``, whichever is longer."""
    return timedelta(minutes=max(duration_minutes / 2, stale_minutes))


@dataclass(frozen=True)
class Fate:
    """What the quiet-hours rule does with one nudge."""

    due: datetime
    at: datetime | None  # when it goes out; None: not delivered

    def words(self, tz: str) -> str:
        if self.at is None:
            return "it will not be delivered (the quiet hours last past its expiry)"
        local = f"{self.at.astimezone(zone(tz)):%H:%M}"
        if self.at < self.due:
            return f"it goes out at {local}, {_span(self.due - self.at)} early"
        late = _span(self.at - self.due)
        return f"it goes out at {local}, when the quiet hours end ({late} late)"


def _span(d: timedelta) -> str:
    minutes = round(d.total_seconds() / 60)
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest} min"
    return f"{hours} h {rest:02d} min" if rest else f"{hours} h"


def fate(due: datetime, expires: datetime, p: Partner, early: timedelta) -> Fate | None:
    """The quiet-hours rule for one nudge of ``p`` (None: not in their quiet hours)."""
    tz = zone(p.timezone)
    if not in_quiet_hours(due, tz, p.quiet_start, p.quiet_end):
        return None
    assert p.quiet_start is not None and p.quiet_end is not None
    moved = before_quiet_hours(due, tz, p.quiet_start, p.quiet_end, early)
    if moved is not None:
        return Fate(due, moved)
    end = quiet_hours_end(due, tz, p.quiet_start, p.quiet_end)
    return Fate(due, end if end < expires else None)


def occurrence_fates(
    ritual: Ritual, start: datetime, p: Partner, early: timedelta, stale_minutes: float
) -> list[tuple[int, Fate]]:
    """For one occurrence: each of ``p``'s nudges (by offset) that falls in their quiet
    hours, with what happens to it."""
    anchor = nudge_anchor(schedule_of(ritual), start)
    stale = stale_after(ritual.duration_minutes, stale_minutes)
    out = []
    for off in ritual.offsets:
        due = anchor - timedelta(minutes=off)
        found = fate(due, due + stale, p, early)
        if found is not None:
            out.append((off, found))
    return out


def mark(f: Fate, tz: str) -> str:
    """A short mark for a preview column: when the nudge goes out, or that it does not."""
    if f.at is None:
        return "(no nudge: quiet hours)"
    when = "early" if f.at < f.due else "late"
    return f"(nudge {f.at.astimezone(zone(tz)):%H:%M}, {when}: quiet hours)"


@dataclass(frozen=True)
class QuietNote:
    """One partner's first nudge of a ritual that falls in their quiet hours."""

    partner_id: int
    partner: str
    ritual_id: int
    ritual: str
    offset_minutes: int
    local: str  # the nudge's planned time, the partner's wall clock
    delivered: bool
    line: str

    def as_dict(self) -> dict[str, object]:
        return {
            "partner_id": self.partner_id,
            "partner": self.partner,
            "ritual_id": self.ritual_id,
            "ritual": self.ritual,
            "offset_minutes": self.offset_minutes,
            "local_time": self.local,
            "delivered": self.delivered,
            "warning": self.line,
        }


def quiet_notes(
    ritual: Ritual, now: datetime, early: timedelta, stale_minutes: float
) -> list[QuietNote]:
    """One note per partner whose nudges for ``ritual`` fall in their quiet hours (the
    first such nudge in the coming week), an undeliverable one before a moved one."""
    if ritual.ended_at is not None or not ritual.offsets:
        return []
    sched = schedule_of(ritual)
    stale = stale_after(ritual.duration_minutes, stale_minutes)
    dues = sorted(
        (nudge_anchor(sched, occ.start) - timedelta(minutes=off), off)
        for occ in occurrences(sched, now, now + LOOKAHEAD)
        if not pauses.paused_then(ritual, occ.start)
        for off in ritual.offsets
    )
    notes = []
    for p in ritual.couple.partners:
        if p.quiet_start is None or p.quiet_end is None:
            continue
        found = [(f, off) for d, off in dues if d >= now if (f := fate(d, d + stale, p, early))]
        if not found:
            continue
        f, offset = next(((f, o) for f, o in found if f.at is None), found[0])
        due = f.due
        local = f"{due.astimezone(zone(p.timezone)):%a %H:%M}"
        quiet = f"{p.quiet_start:%H:%M}-{p.quiet_end:%H:%M}"
        line = (
            f"warning: {p.name}'s reminder for {ritual.title!r} falls at {local} their time, "
            f"in their quiet hours ({quiet}): {f.words(p.timezone)}"
        )
        notes.append(
            QuietNote(p.id, p.name, ritual.id, ritual.title, offset, local, f.at is not None, line)
        )
    return notes


def couple_notes(
    couple: Couple, now: datetime, early: timedelta, stale_minutes: float
) -> list[QuietNote]:
    return [
        n
        for r in sorted(couple.rituals, key=lambda r: r.id)
        for n in quiet_notes(r, now, early, stale_minutes)
    ]


def unreachable(p: Partner, ritual: Ritual) -> list[str]:
    """Why ``p`` gets none of ``ritual``'s nudges, in words, one per channel the ritual
    would use (empty: at least one channel reaches them). The planner's rule: the ritual's
    channels, else the partner's; only those the partner chose and can be reached on."""
    own = p.channel_list
    wanted = ritual.channel_list or own
    if not wanted:
        return ["no channel chosen (partner edit --channels)"]
    why = []
    for ch in wanted:
        if ch not in own:
            why.append(f"{ch.value}: not one of the partner's channels")
        elif ch is Channel.SMS and not p.phone:
            why.append("sms: no phone number")
        elif ch is Channel.SMS and p.sms_consent is ConsentState.OPTED_OUT:
            why.append("sms: replied STOP (only START from their phone undoes it)")
        elif ch is Channel.SMS and p.sms_consent is not ConsentState.CONSENTED:
            why.append("sms: no consent recorded (partner edit --sms-consent SOURCE)")
        elif ch is Channel.EMAIL and not p.email:
            why.append("email: no email address")
        elif ch is Channel.EMAIL and p.email_opted_out_at is not None:
            why.append("email: unsubscribed")
        else:
            return []
    return why
