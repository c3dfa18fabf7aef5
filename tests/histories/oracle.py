"""The invariants every history is checked against after every step.

They read the providers' record (what the Twilio stand-in and the SMTP sink accepted, from
:class:`~tests.histories.model.History`) and what the history did. Hearth's own rows serve
only to name what a message was about: the sid (or Message-ID) Hearth recorded for a row
gives the message's partner, occurrence and purpose; a message Hearth has no record of is
told apart by recipient and body.

Each broken promise is a :class:`Violation` of a named kind; any one fails the history.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from service.db.models import Reminder, ReminderPurpose, ReminderState
from service.db.states import ONE_OFF_PURPOSES
from service.domain.unsubscribe import masked
from tests.histories.model import History, PartnerModel, Seen

CONCURRENT_ANSWERS = "both partners answered at once"
SAME_MESSAGE_WINDOW = timedelta(hours=6)  # one body to one recipient twice in this: a resend
SETTLE_WINDOW = timedelta(minutes=2)  # past a lease or an expiry, a row must be settled by
REVEAL_WITHIN = timedelta(hours=12)  # after both answered (quiet hours may hold it back)
NOTICE_WITHIN = timedelta(hours=12)
UNDELIVERABLE = (
    ReminderState.FAILED,
    ReminderState.UNDELIVERED,
    ReminderState.EXPIRED,
    ReminderState.SKIPPED,
)
REVEAL_MARKS = ("'s answer:", "'s answer to ")
PAUSE_NOTICE_MARK = "paused your"


@dataclass(frozen=True)
class Violation:
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.detail}"


def check(h: History, rows: list[Reminder], now: datetime, lease: timedelta) -> list[Violation]:
    by_id = {r.provider_message_id: r for r in rows if r.provider_message_id}
    found: list[Violation] = []
    found += _once(h, by_id, rows)
    for seen in h.seen:
        partner = h.by_address(seen.channel, seen.to)
        if partner is None:
            found.append(Violation("unknown-recipient", f"{seen.channel} to a stranger"))
            continue
        row = by_id.get(seen.provider_id)
        found += _not_now(h, seen, partner, row)
    found += _settled(h, rows, now, lease)
    found += _reveals(h, now)
    found += _reveal_liveness(h, now)
    found += _pause_notices(h, rows, now)
    found += [
        Violation(
            "item-3-concurrent-answers-5xx" if e.startswith(CONCURRENT_ANSWERS) else "http-5xx", e
        )
        for e in h.http_errors
    ]
    return found


def _label(h: History, seen: Seen) -> str:
    p = h.by_address(seen.channel, seen.to)
    who = f"partner {p.id}" if p else "?"
    return f"{seen.channel} #{seen.seq} to {who} at {seen.at:%Y-%m-%d %H:%M} UTC"


# -- at most once -----------------------------------------------------------------------------


def _once(h: History, by_id: dict[str, Reminder], rows: list[Reminder]) -> list[Violation]:
    """At most one accepted message per partner, occurrence, purpose (and offset, channel)."""
    found: list[Violation] = []
    # Rows whose send is still to be settled (a killed worker's, an unknown outcome): each
    # may be the record of one message the provider took, the newest first.
    pending = Counter(
        (r.partner_id, str(r.channel)) for r in rows if r.state is ReminderState.SENDING
    )
    keyed: dict[tuple[object, ...], list[Seen]] = defaultdict(list)
    unrecorded: list[Seen] = []
    mails: set[tuple[str, str]] = set()
    for seen in h.seen:
        if seen.provider_id in h.undelivered:
            continue
        if seen.channel == "email":
            # An email resent with the same Message-ID (an unknown send, which SMTP cannot be
            # asked about) is the same message to the recipient's mailbox: counted once.
            if (seen.to, seen.provider_id) in mails:
                continue
            mails.add((seen.to, seen.provider_id))
        row = by_id.get(seen.provider_id)
        if row is None:
            unrecorded.append(seen)
            continue
        key: tuple[object, ...]
        if row.ritual_id is None or row.purpose is ReminderPurpose.MESSAGE:
            key = ("row", row.id)
        else:
            key = (
                seen.channel,
                row.partner_id,
                row.ritual_id,
                row.occurrence_start,
                row.purpose.value,
                row.offset_minutes,
            )
        keyed[key].append(seen)
    for key, group in keyed.items():
        if len(group) > 1:
            found.append(Violation("duplicate", f"{len(group)} accepted for {key}"))
    # A message Hearth holds no record of is a resend when the same recipient got the same
    # body shortly before or after (discreet nudges repeat their body daily, hence a window).
    for lost in sorted(unrecorded, key=lambda seen: -seen.seq):
        partner = h.by_address(lost.channel, lost.to)
        if partner is not None and pending[(partner.id, lost.channel)] > 0:
            pending[(partner.id, lost.channel)] -= 1  # its row has yet to learn it was sent
            continue
        twins = [
            s
            for s in h.seen
            if s is not lost
            and s.provider_id not in h.undelivered
            and (s.channel, s.to, masked(s.body)) == (lost.channel, lost.to, masked(lost.body))
            and abs(s.at - lost.at) <= SAME_MESSAGE_WINDOW
            and (s.seq > lost.seq or s.provider_id not in {u.provider_id for u in unrecorded})
        ]
        if twins:
            kind = _resend_kind(h, lost.seq)
            found.append(
                Violation(
                    kind,
                    f"{_label(h, lost)} (no record in Hearth) sent again as "
                    f"{', '.join(_label(h, t) for t in twins)}",
                )
            )
    return found


def _resend_kind(h: History, seq: int) -> str:
    """A resend after a fault that left the outcome unknown to Hearth is a known-open kind."""
    before = {fault for at, fault in h.unknown_faults if at <= seq}
    if before & {"accept-then-timeout", "accept-then-drop"}:
        return "item-1-unknown-outcome-resent"
    if "killed-after-send" in before:
        return "unknown-after-kill-resent"
    return "duplicate"


# -- never when it should not -----------------------------------------------------------------


def _in_quiet(at: datetime, tz: str, quiet: tuple[time, time]) -> bool:
    local = at.astimezone(ZoneInfo(tz)).time().replace(tzinfo=None)
    start, end = quiet
    if start < end:
        return start <= local < end
    return local >= start or local < end


def _not_now(h: History, seen: Seen, p: PartnerModel, row: Reminder | None) -> list[Violation]:
    found: list[Violation] = []
    label = _label(h, seen)
    if seen.channel == "sms" and p.stopped_at(seen.seq, seen.at):
        found.append(Violation("after-stop", f"{label}: after their STOP was answered"))
    quiet = p.quiet_at(seen.seq)
    if quiet is not None and _in_quiet(seen.at, p.timezone, quiet):
        found.append(Violation("quiet-hours", f"{label}: inside quiet hours {quiet}"))
    couple = h.couple(p.couple_id)
    if row is None:
        return found
    one_off = row.ritual_id is None or row.purpose in (
        ReminderPurpose.MESSAGE,
        ReminderPurpose.NOTICE,
        ReminderPurpose.CONFIRM,
    )
    # Hearth's rule for a message about an occurrence: held back when the occurrence falls in
    # the pause. A reply's own message (a reveal, "your partner paused") goes out anyway.
    paused = couple.paused_at(seen.seq, row.occurrence_start) and couple.paused_at(
        seen.seq, seen.at
    )
    if not one_off and paused:
        found.append(Violation("while-paused", f"{label}: {row.purpose.value} while paused"))
    ritual = next((r for r in couple.rituals if r.id == row.ritual_id), None)
    if ritual is None or one_off:
        return found
    if ritual.skipped_at(seen.seq, row.occurrence_start):
        found.append(Violation("skipped", f"{label}: {row.purpose.value} for a skipped one"))
    if ritual.times[0][0] > seen.seq:
        found.append(Violation("wrong-record", f"{label}: recorded for a ritual added after it"))
        return found
    _, edit_at, at_time = ritual.time_at(seen.seq)
    local = row.occurrence_start.astimezone(ZoneInfo(ritual.timezone)).time()
    if (
        row.purpose in (ReminderPurpose.NUDGE, ReminderPurpose.SNOOZE)
        and row.occurrence_start > edit_at
        and local.replace(tzinfo=None) != at_time
    ):
        found.append(
            Violation("old-time", f"{label}: for {local:%H:%M}, the ritual is at {at_time:%H:%M}")
        )
    return found


# -- every reminder settles ---------------------------------------------------------------------


def _settled(h: History, rows: list[Reminder], now: datetime, lease: timedelta) -> list[Violation]:
    found: list[Violation] = []
    accepted = {s.provider_id for s in h.seen}
    for r in rows:
        what = f"reminder {r.id} ({r.purpose.value}, {r.channel.value}, partner {r.partner_id})"
        if r.state is ReminderState.SENDING and r.lease_until is not None:
            if now > r.lease_until + lease + SETTLE_WINDOW:
                found.append(Violation("stuck-sending", f"{what}: sending past its lease"))
        elif r.state is ReminderState.SCHEDULED and now > r.expires_at + lease + SETTLE_WINDOW:
            found.append(Violation("unsettled", f"{what}: scheduled past its expiry"))
        elif r.state in (ReminderState.SENT, ReminderState.DELIVERED):
            if r.provider_message_id not in accepted:
                found.append(Violation("sent-not-accepted", f"{what}: the provider has none"))
        elif r.state in UNDELIVERABLE and not (r.last_error or "").strip():
            found.append(Violation("silent-failure", f"{what}: {r.state.value}, no reason"))
    return found


# -- the reveal --------------------------------------------------------------------------------


def _reveals(h: History, now: datetime) -> list[Violation]:
    """Each partner gets the other's answer once both answered, exactly once, never before."""
    found: list[Violation] = []
    for couple in h.couples:
        if len(couple.partners) != 2:
            continue
        for p, q in (couple.partners, couple.partners[::-1]):
            got: dict[tuple[str, str], int] = defaultdict(int)
            for seen in h.seen:
                if h.by_address(seen.channel, seen.to) is not p:
                    continue
                if not any(mark in seen.body for mark in REVEAL_MARKS):
                    continue
                if seen.provider_id in h.undelivered:
                    continue  # the carrier never delivered it: its resend is the one
                theirs = [a for a in q.answers if a[2] in seen.body]
                mine = [a for a in p.answers if a[0] < seen.seq]
                if not theirs or not mine:
                    found.append(Violation("early-reveal", f"{_label(h, seen)}: before both"))
                for a in theirs:
                    got[(seen.channel, a[2])] += 1
            for (channel, text), n in got.items():
                if n > 1:
                    detail = f"reveal of {text!r} {n}x by {channel}"
                    found.append(Violation(_resend_kind(h, h.seen[-1].seq), detail))
    return found


def _reveal_liveness(h: History, now: datetime) -> list[Violation]:
    """Both answered one occurrence at once: each has the other's answer within a bound."""
    found: list[Violation] = []
    partners = {p.id: p for p in h.partners}
    for a_id, b_id, when, seq in h.together:
        if now - when < REVEAL_WITHIN or h.refusals:  # a refusal may have hit the reveal
            continue
        a, b = partners[a_id], partners[b_id]
        for p, q in ((a, b), (b, a)):
            given = [text for at_seq, _, text in q.answers if at_seq == seq]
            if p.stops or not given:
                continue
            text = given[-1]
            if not any(text in s.body and h.by_address(s.channel, s.to) is p for s in h.seen):
                found.append(
                    Violation(
                        "item-3-answers-never-revealed",
                        f"partner {p.id} never got {text!r} ({REVEAL_WITHIN} after both answered)",
                    )
                )
    return found


# -- the pause notice ----------------------------------------------------------------------------


def _pause_notices(h: History, rows: list[Reminder], now: datetime) -> list[Violation]:
    """A partner who paused on their page is told "your partner has been told": within a
    bound the other partner has a notice on some channel (unless they stopped everything, or
    the provider refused that very notice for good: a failure with its reason, which
    `deliveries list` shows; a notice Hearth itself held back is still a violation)."""
    found: list[Violation] = []
    refused = [
        (r.partner_id, r.created_at)
        for r in rows
        if r.purpose in ONE_OFF_PURPOSES
        and r.state in (ReminderState.FAILED, ReminderState.UNDELIVERED)
        and (r.last_error or "").strip()
    ]
    for couple in h.couples:
        for span in couple.pauses:
            if span.until is not None or now - span.start_at < NOTICE_WITHIN:
                continue  # only pauses from the page are open-ended
            for p in couple.partners:
                told = [
                    s
                    for s in h.seen
                    if h.by_address(s.channel, s.to) is p
                    and PAUSE_NOTICE_MARK in s.body
                    and s.seq > span.start_seq
                ]
                if told or p.stops:
                    continue
                if any(o.stops for o in couple.partners):
                    continue
                if span.by == p.id:
                    continue
                if any(pid == p.id and at >= span.start_at for pid, at in refused):
                    continue
                found.append(
                    Violation("item-5-pause-notice-skipped", f"partner {p.id}: never told")
                )
    return found
