"""Replies from partners by SMS: keywords, carrier-standard opt-out, and everything else.

Each reply is stored with the partner and what Hearth did. The Twilio MessageSid makes
handling idempotent: a webhook Twilio retries is answered again without acting twice.
Opt-out words cancel every pending SMS to the partner in the same transaction, before the
confirmation goes out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from service.core.exceptions import Conflict, InvalidInput
from service.core.timeutil import in_quiet_hours, zone
from service.db.context import Hearth
from service.db.models import (
    Channel,
    CheckIn,
    ConsentState,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
    Reply,
    Ritual,
    RitualKind,
)
from service.domain import partners, rituals, stats
from service.domain.events import EventType, record
from service.replies import repair

log = structlog.get_logger("hearth.inbound")

STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
START_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP", "INFO"})
SNOOZE_DEFAULT, SNOOZE_MAX = 30, 180

HELP_TEXT = (
    "Hearth: reminders for your relationship rituals. Reply DONE, SKIP, SNOOZE 30 or REPAIR. "
    "STOP to opt out, START to opt back in. Msg&data rates may apply."
)
STOPPED_TEXT = "Hearth: you will get no more texts. Reply START to opt back in."
STARTED_TEXT = "Hearth: texts are back on. Reply STOP to opt out, HELP for help."
GENTLE_TEXT = "Hearth: got it. Reply DONE, SKIP, SNOOZE or REPAIR; HELP for more."
CALLED_OFF_TEXT = "Hearth: called off. We've let your partner know."
_WORD = re.compile(r"[A-Z]+")
# "SNOOZE 45", "snooze 45 min", "Snooze 1h" (upper-cased by parse)
_SNOOZE_ARG = re.compile(r"(?P<n>\d{1,4})\s*(?P<unit>M|MIN|MINS|MINUTES?|H|HR|HRS|HOURS?)?")


@dataclass(frozen=True)
class Parsed:
    keyword: str | None  # the recognised first word, upper case
    argument: str | None  # e.g. the minutes of SNOOZE


def parse(body: str) -> Parsed:
    """Case-insensitive; surrounding whitespace and punctuation ignored ("Stop." is STOP)."""
    text = body.strip().upper()
    words = _WORD.findall(text)
    if not words:
        return Parsed(None, None)
    first = words[0]
    known = STOP_WORDS | START_WORDS | HELP_WORDS | {"DONE", "SKIP", "SNOOZE", "REPAIR", "NO"}
    if first not in known:
        return Parsed(None, None)
    rest = text[text.find(first) + len(first) :].strip(" .!?,;:-")
    if first != "SNOOZE" and _WORD.search(rest):
        return Parsed(None, None)  # "stop by later" is a sentence, not a keyword
    return Parsed(first, rest or None)


def _latest_sent(
    session: Session, partner: Partner, *purposes: ReminderPurpose, channel: Channel | None = None
) -> Reminder | None:
    """The latest reminder of these purposes sent to ``partner`` (on ``channel`` if given)."""
    stmt = sa.select(Reminder).where(
        Reminder.partner_id == partner.id,
        Reminder.purpose.in_(purposes),
        Reminder.state.in_([ReminderState.SENT, ReminderState.DELIVERED]),
    )
    if channel is not None:
        stmt = stmt.where(Reminder.channel == channel)
    return session.scalar(stmt.order_by(Reminder.sent_at.desc(), Reminder.id.desc()).limit(1))


def handle(
    hearth: Hearth, session: Session, now: datetime, partner: Partner, body: str, sid: str | None
) -> str | None:
    """Act on one reply; returns the text to answer with (None: stay silent)."""
    if sid:
        seen = session.scalar(sa.select(Reply).where(Reply.provider_message_id == sid))
        if seen is not None:
            return None  # a retried webhook: acted on already
    parsed = parse(body)
    word = parsed.keyword
    if word == "YES" and partner.sms_consent is not ConsentState.OPTED_OUT:
        word = None  # a YES from a subscribed partner answers a follow-up, not opt-in
    answer, action, ritual_id = _act(hearth, session, now, partner, word, parsed, body)
    session.add(
        Reply(
            couple_id=partner.couple_id,
            partner_id=partner.id,
            channel=Channel.SMS,
            provider_message_id=sid,
            body=body[:1600],
            keyword=parsed.keyword,
            action=action[:200],
            ritual_id=ritual_id,
            received_at=now,
        )
    )
    session.flush()
    record(session, EventType.REPLY_RECEIVED, now, partner.couple_id, partner_id=partner.id,
           keyword=parsed.keyword, action=action)  # fmt: skip
    log.info("reply_handled", couple_id=partner.couple_id, partner_id=partner.id,
             keyword=parsed.keyword, action=action)  # fmt: skip
    return answer


def _act(
    hearth: Hearth,
    session: Session,
    now: datetime,
    partner: Partner,
    word: str | None,
    parsed: Parsed,
    body: str,
) -> tuple[str | None, str, int | None]:
    if word in STOP_WORDS:
        assert partner.phone is not None  # found by the number that texted
        cancelled = partners.opt_out_sms(session, now, partner.phone, f"sms {word}")
        return STOPPED_TEXT, f"opted out of sms; {cancelled} pending cancelled", None
    if word in START_WORDS:
        partners.set_consent(session, now, partner, ConsentState.CONSENTED, f"sms {word}")
        return STARTED_TEXT, "opted in to sms", None
    if word in HELP_WORDS:
        # Answered even after STOP: carriers require HELP to work for every number.
        return HELP_TEXT, "help sent", None
    if partner.sms_consent is ConsentState.OPTED_OUT:
        return None, "ignored: partner opted out", None
    if word == "DONE":
        return _done(hearth, session, now, partner)
    if word == "SKIP":
        return _skip(session, now, partner)
    if word == "SNOOZE":
        return _snooze(hearth, session, now, partner, parsed.argument)
    if word == "REPAIR":
        try:
            repair.request(session, now, partner.couple, partner, "sms")
        except Conflict:
            return "Hearth: a conversation is already being arranged.", "repair pending", None
        return (
            "Hearth: we'll find a calm time for you both and text you soon.",
            "repair requested",
            None,
        )
    followup = _latest_sent(session, partner, ReminderPurpose.FOLLOWUP)
    if followup is not None and followup.sent_at and now - followup.sent_at < timedelta(hours=36):
        return "Hearth: thank you, noted.", "follow-up answer", followup.ritual_id
    return _gentle(session, now, partner)


def _done(
    hearth: Hearth, session: Session, now: datetime, partner: Partner
) -> tuple[str | None, str, int | None]:
    # The chase asks for DONE too: it names an occurrence an hour's nudge may have followed.
    last = _latest_sent(
        session, partner, ReminderPurpose.NUDGE, ReminderPurpose.SNOOZE, ReminderPurpose.CHASE
    )
    if last is None or last.ritual_id is None:
        return "Hearth: there is nothing to mark done yet.", "done: nothing to mark", None
    exists = session.scalar(
        sa.select(CheckIn).where(
            CheckIn.ritual_id == last.ritual_id,
            CheckIn.occurrence_start == last.occurrence_start,
            CheckIn.partner_id == partner.id,
        )
    )
    if exists is None:
        session.add(CheckIn(ritual_id=last.ritual_id, occurrence_start=last.occurrence_start,
                            partner_id=partner.id, at=now, source="sms"))  # fmt: skip
        session.flush()
        record(session, EventType.OCCURRENCE_DONE, now, partner.couple_id, partner_id=partner.id,
               ritual_id=last.ritual_id, occurrence=last.occurrence_start.isoformat())  # fmt: skip
    ritual = session.get(Ritual, last.ritual_id)
    if exists is None and ritual is not None:
        _chase(hearth, session, now, partner, ritual, last.occurrence_start)
    title = ritual.title if ritual and (partner.full_text or ritual.kind != "repair") else "it"
    return f"Hearth: lovely, {title} marked done.", "done", last.ritual_id


def _chase(
    hearth: Hearth, session: Session, now: datetime, partner: Partner, ritual: Ritual,
    occurrence: datetime,
) -> None:  # fmt: skip
    """One gentle text to each other partner who has not said DONE, ``chase_hours`` before
    the grace period ends; the dispatcher drops it if they answer first."""
    hours = hearth.settings.replies.chase_hours
    if not hours or ritual.kind is RitualKind.REPAIR:
        return
    end = stats.grace_end(ritual, occurrence, hearth.settings.replies.grace)
    due = max(now, end - timedelta(hours=hours))
    if due >= end:
        return
    answered = set(
        session.scalars(
            sa.select(CheckIn.partner_id).where(
                CheckIn.ritual_id == ritual.id, CheckIn.occurrence_start == occurrence
            )
        )
    )
    for other in partner.couple.partners:
        if other.id in answered or not partners.can_text(other):
            continue
        if Channel.SMS not in other.channel_list:
            continue
        chase = Reminder(
            couple_id=other.couple_id, ritual_id=ritual.id, partner_id=other.id,
            channel=Channel.SMS, offset_minutes=0, purpose=ReminderPurpose.CHASE,
            occurrence_start=occurrence, due_at=due, expires_at=end,
            state=ReminderState.SCHEDULED, attempts=0, next_attempt_at=due,
            created_at=now, updated_at=now,
        )  # fmt: skip
        if not _add_once(session, chase):
            continue  # chased already (one per partner and occurrence)


def _skip(session: Session, now: datetime, partner: Partner) -> tuple[str | None, str, int | None]:
    nudges = (ReminderPurpose.NUDGE, ReminderPurpose.SNOOZE)
    last = _latest_sent(session, partner, *nudges, ReminderPurpose.INVITE)
    if last is not None and last.purpose is ReminderPurpose.INVITE:
        # The invitation says "Reply SKIP to call it off".
        req = repair.for_invitation(session, last.ritual_id, now)
        if req is not None:
            repair.cancel(session, now, req, by=partner)
            return CALLED_OFF_TEXT, "repair called off", last.ritual_id
        last = _latest_sent(session, partner, *nudges)
    ritual = session.get(Ritual, last.ritual_id) if last and last.ritual_id else None
    if ritual is None or ritual.ended_at is not None:
        return "Hearth: there is no upcoming ritual to skip.", "skip: nothing to skip", None
    upcoming = rituals.upcoming(ritual, now, 1)
    if not upcoming:
        return "Hearth: there is no upcoming ritual to skip.", "skip: nothing to skip", None
    occ = upcoming[0]
    try:
        rituals.skip(session, now, ritual, occ.original_start, source="sms")
    except (Conflict, InvalidInput):
        return "Hearth: that one is already skipped.", "skip: already skipped", ritual.id
    local = occ.start.astimezone(zone(partner.timezone))
    return f"Hearth: skipped, see you next time ({local:%a %H:%M} is off).", "skipped", ritual.id


def _snooze(
    hearth: Hearth, session: Session, now: datetime, partner: Partner, arg: str | None
) -> tuple[str | None, str, int | None]:
    match = _SNOOZE_ARG.fullmatch(arg or "")
    if arg and match is None:
        return f"Hearth: SNOOZE takes minutes, e.g. SNOOZE {SNOOZE_DEFAULT}.", "snooze: bad", None
    minutes = SNOOZE_DEFAULT
    if match is not None and match["n"]:
        minutes = int(match["n"]) * (60 if (match["unit"] or "").startswith("H") else 1)
    minutes = max(5, min(SNOOZE_MAX, minutes))
    # The partner texted: snooze the text they got (an email sent alongside finishes a few
    # milliseconds apart and is not what they answer); email only if no text went out.
    nudges = (ReminderPurpose.NUDGE, ReminderPurpose.SNOOZE)
    last = _latest_sent(session, partner, *nudges, channel=Channel.SMS) or _latest_sent(
        session, partner, *nudges
    )
    if last is None or last.ritual_id is None:
        return "Hearth: there is nothing to snooze.", "snooze: nothing", None
    due = now + timedelta(minutes=minutes)
    if due >= last.expires_at:
        due = last.expires_at - timedelta(minutes=1)  # never past expiry
    if due <= now + timedelta(minutes=1):
        return "Hearth: too late to snooze this one.", "snooze: too late", last.ritual_id
    tz = zone(partner.timezone)
    if in_quiet_hours(due, tz, partner.quiet_start, partner.quiet_end):
        return "Hearth: that would fall in your quiet hours.", "snooze: quiet hours", None
    offset = -int((due - last.occurrence_start).total_seconds() // 60)
    snooze = Reminder(
        couple_id=last.couple_id, ritual_id=last.ritual_id, partner_id=partner.id,
        channel=last.channel, offset_minutes=offset, purpose=ReminderPurpose.SNOOZE,
        occurrence_start=last.occurrence_start, due_at=due, expires_at=last.expires_at,
        state=ReminderState.SCHEDULED, attempts=0, next_attempt_at=due,
        prompt_id=last.prompt_id, created_at=now, updated_at=now,
    )  # fmt: skip
    if not _add_once(session, snooze):
        return "Hearth: already snoozed to then.", "snooze: duplicate", last.ritual_id
    # A second SNOOZE replaces the first: one reminder, at the time last asked for.
    session.execute(
        sa.update(Reminder)
        .where(
            Reminder.ritual_id == last.ritual_id,
            Reminder.occurrence_start == last.occurrence_start,
            Reminder.partner_id == partner.id,
            Reminder.purpose == ReminderPurpose.SNOOZE,
            Reminder.state == ReminderState.SCHEDULED,
            Reminder.id != snooze.id,
        )
        .values(
            state=ReminderState.CANCELLED,
            last_error="snooze replaced",
            final_at=now,
            updated_at=now,
        )
    )
    local = due.astimezone(tz)
    return (
        f"Hearth: snoozed, we'll remind you at {local:%H:%M}.",
        f"snoozed {minutes} min",
        last.ritual_id,
    )


def _add_once(session: Session, reminder: Reminder) -> bool:
    """Add a reminder unless its unique key exists; False if it did. The insert runs inside
    a savepoint (added within it), so a clash rolls back only the savepoint."""
    try:
        with session.begin_nested():
            session.add(reminder)
            session.flush()
    except sa.exc.IntegrityError:
        return False
    return True


def _gentle(
    session: Session, now: datetime, partner: Partner
) -> tuple[str | None, str, int | None]:
    """At most one help reply per partner per day to anything Hearth did not understand."""
    recent = session.scalar(
        sa.select(sa.func.count()).where(
            Reply.partner_id == partner.id,
            Reply.action == "stored; help sent",
            Reply.received_at > now - timedelta(days=1),
        )
    )
    if recent:
        return None, "stored", None
    return GENTLE_TEXT, "stored; help sent", None


def find_partner(session: Session, phone: str) -> Partner | None:
    """The partner texting from ``phone`` (the most recently active if several share it)."""
    return session.scalar(
        sa.select(Partner)
        .where(Partner.phone == phone)
        .order_by(Partner.updated_at.desc())
        .limit(1)
    )
