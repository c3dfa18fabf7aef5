"""Replies from partners by SMS: the keyword router, carrier-standard opt-out, and the rest.

Each reply is stored with the partner and what Hearth did; its text sealed
(service/core/crypto.py). The Twilio MessageSid makes handling idempotent: a webhook Twilio
retries is answered again without acting twice. Opt-out words cancel every pending SMS to
the partner in the same transaction, before the confirmation goes out.

Keywords are read in the partner's language and English, case- and accent-insensitively
(service/replies/vocabulary.py, words.py), and routed by :data:`COMMANDS`, one handler per
command; every answer is in the partner's language (service/core/i18n.py). A reply that is
none is an answer to the shared question or a mood (service/replies/question.py), else a
follow-up answer, else stored with a gentle hint (one a day). A one-word reply close to a
keyword gets a "did you mean".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from service.core import i18n
from service.core.exceptions import Conflict, InvalidInput
from service.core.i18n import N_, Lang
from service.core.timeutil import zone
from service.db.context import Hearth
from service.db.models import (
    Channel,
    ConsentState,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
    Reply,
    Ritual,
)
from service.domain import partners, skips, wording
from service.domain.events import EventType, record
from service.domain.recurrence import occurrences, schedule_of
from service.replies import outgoing, pausing, question, repair, snoozing, vocabulary, words
from service.replies.vocabulary import HELP_WORDS, KEYWORDS, START_WORDS, STOP_WORDS
from service.replies.words import Parsed
from service.web.page import tokens as page_tokens

log = structlog.get_logger("hearth.inbound")

__all__ = ["KEYWORDS", "Parsed", "handle", "parse"]

# One GSM-7 segment in every language (tests/test_i18n.py).
HELP_TEXT = N_(
    "Hearth: reply DONE, SKIP, SNOOZE 30, PAUSE 3D, RESUME, REPAIR, LINK (your page), a mood 1-5 "
    "or your answer. STOP opts out, START in. Msg&data rates may apply."
)
STOPPED_TEXT = N_("Hearth: you will get no more texts. Reply START to opt back in.")
STARTED_TEXT = N_("Hearth: texts are back on. Reply STOP to opt out, HELP for help.")
JOINED_TEXT = N_("Hearth: you're in, thank you. Reply HELP for what you can text, STOP to opt out.")
GENTLE_TEXT = N_("Hearth: got it. Reply DONE, SKIP, SNOOZE or REPAIR; HELP for more.")
CALLED_OFF_TEXT = N_("Hearth: called off. We've let your partner know.")
TYPO_TEXT = N_("Hearth: did you mean {word}? HELP lists every reply.")
NOTED_TEXT = N_("Hearth: thank you, noted.")
EMAIL_STARTED_TEXT = N_("Hearth: emails are back on. Reply STOP to opt out, HELP for help.")
NOTHING_DONE = N_("Hearth: there is nothing to mark done yet.")
NOTHING_TO_SKIP = N_("Hearth: there is no upcoming ritual to skip.")
SKIPPED_ALREADY = N_("Hearth: that one is already skipped.")
SKIPPED_NOTICE = N_("Hearth: {name} skipped {title} on {when}. See you next time.")
# LINK: a new page link each time (only a hash is stored); the one before stops working.
LINK_TEXT = N_(
    "Hearth: your own page (pause, quiet hours, calendar): {url} Any older link now stops."
)
Outcome = tuple[str | None, str, int | None]  # (answer text, action stored, ritual id)


@dataclass(frozen=True)
class Turn:
    """One reply being handled: what a keyword handler gets."""

    hearth: Hearth
    session: Session
    now: datetime
    partner: Partner
    parsed: Parsed
    body: str
    lang: Lang  # the partner's language: every answer is in it
    channel: Channel = Channel.SMS  # where the reply came from (email: service/replies/mailbox)


Handler = Callable[[Turn], Outcome]


def parse(body: str, language: str = i18n.DEFAULT) -> Parsed:
    """Case- and accent-insensitive; punctuation ignored ("Stop." is STOP, "Pausé" PAUSE);
    the words of ``language`` and the English ones ("später 20" is SNOOZE for German)."""
    return words.parse(body, vocabulary.known(language), vocabulary.TAKES_ARGUMENT)


def handle(
    hearth: Hearth,
    session: Session,
    now: datetime,
    partner: Partner,
    body: str,
    sid: str | None,
    channel: Channel = Channel.SMS,
) -> str | None:
    """Act on one reply (by SMS, or by email); returns the text to answer with (None: stay
    silent). The same words work on both, answered on the channel they came by."""
    if sid:
        seen = session.scalar(sa.select(Reply).where(Reply.provider_message_id == sid))
        if seen is not None:
            return None  # a retried webhook: acted on already
    t = i18n.lang(partner.language)
    parsed = parse(body, t.code)
    answer, action, ritual_id = _act(Turn(hearth, session, now, partner, parsed, body, t, channel))
    session.add(
        Reply(
            couple_id=partner.couple_id,
            partner_id=partner.id,
            channel=channel,
            provider_message_id=sid,
            # Without a key, a partner's words are not kept at all (never in clear).
            body=hearth.keys.seal(body[:1600]) if hearth.keys.configured else "",
            keyword=parsed.keyword,
            action=action[:200],
            ritual_id=ritual_id,
            received_at=now,
        )
    )
    session.flush()
    record(
        session,
        EventType.REPLY_RECEIVED,
        now,
        partner.couple_id,
        partner_id=partner.id,
        keyword=parsed.keyword,
        action=action,
    )
    log.info(
        "reply_handled",
        couple_id=partner.couple_id,
        partner_id=partner.id,
        keyword=parsed.keyword,
        action=action,
    )
    return answer


def _act(t: Turn) -> Outcome:
    word, consent = t.parsed.keyword, t.partner.sms_consent
    if t.channel is Channel.EMAIL:  # email has no opt-in: only an opt-out
        opted_out = t.partner.email_opted_out_at is not None
        consent = ConsentState.OPTED_OUT if opted_out else ConsentState.CONSENTED
    if word == "YES" and consent is ConsentState.CONSENTED:
        word = None  # a YES from a subscribed partner answers a follow-up, not opt-in
    if word in ALWAYS:
        return ALWAYS[word](t)
    if consent is ConsentState.OPTED_OUT:
        return None, "ignored: partner opted out", None
    if consent is ConsentState.PENDING:
        return None, "ignored: waiting for YES", None  # nothing but the confirmation
    if word is not None and word in COMMANDS:
        return COMMANDS[word](t)
    meant = words.typo(t.body, vocabulary.shown(t.lang.code))
    if meant is not None:
        return t.lang._(TYPO_TEXT).format(word=meant), f"hint: {meant}", None
    followup = outgoing.latest_sent(t.session, t.partner, ReminderPurpose.FOLLOWUP)
    nudge = outgoing.latest_sent(t.session, t.partner, *outgoing.NUDGES)
    if (
        followup is not None
        and _recent(followup, t.now)
        and (nudge is None or _later(followup, nudge))
    ):
        return t.lang._(NOTED_TEXT), "follow-up answer", followup.ritual_id
    got = question.reply(t.hearth, t.session, t.now, t.partner, t.body)
    if got is not None:
        return got
    if _recent(followup, t.now):
        assert followup is not None
        return t.lang._(NOTED_TEXT), "follow-up answer", followup.ritual_id
    return _gentle(t)


def _recent(r: Reminder | None, now: datetime) -> bool:
    return r is not None and r.sent_at is not None and now - r.sent_at < timedelta(hours=36)


def _later(a: Reminder, b: Reminder) -> bool:
    return (a.sent_at, a.id) > (b.sent_at, b.id)


def _stop(t: Turn) -> Outcome:
    word = t.parsed.keyword
    if t.channel is Channel.EMAIL:
        if t.partner.email_opted_out_at is None:
            source = f"email {word}"
            partners.set_consent(
                t.session, t.now, t.partner, ConsentState.OPTED_OUT, source, channel=Channel.EMAIL
            )
        return None, "opted out of email", None  # no email goes to who said STOP
    assert t.partner.phone is not None  # found by the number that texted
    cancelled = partners.opt_out_sms(t.session, t.now, t.partner.phone, f"sms {word}")
    return t.lang._(STOPPED_TEXT), f"opted out of sms; {cancelled} pending cancelled", None


def _start(t: Turn) -> Outcome:
    if t.channel is Channel.EMAIL:
        if t.partner.email_opted_out_at is not None:
            partners.set_consent(
                t.session, t.now, t.partner, ConsentState.CONSENTED, "email START", Channel.EMAIL
            )
        return t.lang._(EMAIL_STARTED_TEXT), "opted in to email", None
    was = t.partner.sms_consent
    partners.set_consent(
        t.session,
        t.now,
        t.partner,
        ConsentState.CONSENTED,
        f"sms {t.parsed.word or t.parsed.keyword}",
    )
    if was is ConsentState.PENDING:
        return t.lang._(JOINED_TEXT), "opted in to sms (YES)", None
    return t.lang._(STARTED_TEXT), "opted in to sms", None


def _help(t: Turn) -> Outcome:
    # Answered even after STOP: carriers require HELP to work for every number.
    return t.lang._(HELP_TEXT), "help sent", None


def _done(t: Turn) -> Outcome:
    # The chase asks for DONE too: it names an occurrence an hour's nudge may have followed.
    last = outgoing.latest_sent(t.session, t.partner, *outgoing.NUDGES)
    ritual = t.session.get(Ritual, last.ritual_id) if last and last.ritual_id else None
    if last is None or ritual is None:
        return t.lang._(NOTHING_DONE), "done: nothing to mark", None
    question.mark_done(
        t.hearth, t.session, t.now, t.partner, ritual, last.occurrence_start, t.channel.value
    )
    if t.partner.full_text or ritual.kind != "repair":
        text = t.lang._("Hearth: lovely, {title} marked done.").format(
            title=wording.title(ritual, t.lang)
        )
    else:
        text = t.lang._("Hearth: lovely, marked done.")
    return text, "done", last.ritual_id


def _repair(t: Turn) -> Outcome:
    try:
        repair.request(t.session, t.now, t.partner.couple, t.partner, t.channel.value)
    except Conflict:
        return t.lang._("Hearth: a conversation is already being arranged."), "repair pending", None
    return (
        t.lang._("Hearth: we'll find a calm time for you both and text you soon."),
        "repair requested",
        None,
    )


def _skip(t: Turn) -> Outcome:
    session, now, partner = t.session, t.now, t.partner
    nudges = (ReminderPurpose.NUDGE, ReminderPurpose.SNOOZE)
    last = outgoing.latest_sent(session, partner, *nudges, ReminderPurpose.INVITE)
    if last is not None and last.purpose is ReminderPurpose.INVITE:
        # The invitation says "Reply SKIP to call it off".
        req = repair.for_invitation(session, last.ritual_id, now)
        if req is not None:
            repair.cancel(session, now, req, by=partner)
            return t.lang._(CALLED_OFF_TEXT), "repair called off", last.ritual_id
        last = outgoing.latest_sent(session, partner, *nudges)
    ritual = session.get(Ritual, last.ritual_id) if last and last.ritual_id else None
    if ritual is None or ritual.ended_at is not None:
        return t.lang._(NOTHING_TO_SKIP), "skip: nothing to skip", None
    occ = _next_planned(ritual, now)
    if occ is None:
        return t.lang._(NOTHING_TO_SKIP), "skip: nothing to skip", None
    original, start = occ
    if original in schedule_of(ritual).skips:
        # A second SKIP of the same occurrence changes nothing (not the one after it).
        return t.lang._(SKIPPED_ALREADY), "skip: already skipped", ritual.id
    try:
        skips.skip(session, now, ritual, original, source=t.channel.value)
    except (Conflict, InvalidInput):
        return t.lang._(SKIPPED_ALREADY), "skip: already skipped", ritual.id
    for other in outgoing.others(partner):
        theirs = i18n.lang(other.language)  # each reads it in their own language and zone
        when = theirs.day_time(start.astimezone(zone(other.timezone)))
        note = theirs._(SKIPPED_NOTICE).format(
            name=partner.name, title=wording.title(ritual, theirs), when=when
        )
        outgoing.tell(t.hearth, session, now, other, note)
    local = start.astimezone(zone(partner.timezone))
    off = t.lang._("Hearth: skipped, see you next time ({when} is off).")
    return off.format(when=t.lang.day_time(local)), "skipped", ritual.id


def _next_planned(ritual: Ritual, now: datetime) -> tuple[datetime, datetime] | None:
    """The next occurrence from ``now`` as planned before any skip: (original, actual start)."""
    unskipped = dataclasses.replace(schedule_of(ritual), skips=frozenset())
    for days in (14, 60, 400, 800):
        found = occurrences(unskipped, now, now + timedelta(days=days))
        if found:
            return found[0].original_start, found[0].start
    return None


def _snooze(t: Turn) -> Outcome:
    return snoozing.snooze(t.session, t.now, t.partner, t.parsed.argument, t.lang)


def _gentle(t: Turn) -> Outcome:
    """At most one help reply per partner per day to anything Hearth did not understand."""
    recent = t.session.scalar(
        sa.select(sa.func.count()).where(
            Reply.partner_id == t.partner.id,
            Reply.action == "stored; help sent",
            Reply.received_at > t.now - timedelta(days=1),
        )
    )
    if recent:
        return None, "stored", None
    return t.lang._(GENTLE_TEXT), "stored; help sent", None


def find_partner(session: Session, phone: str) -> Partner | None:
    """The partner texting from ``phone``. When partners of several couples share it, the
    one it last got a text for (the newest SMS sent to it): a reply answers that text. Not
    ``updated_at``, which an admin's edit or a page link moves. Never texted: the newest."""
    found = list(session.scalars(sa.select(Partner).where(Partner.phone == phone)))
    if len(found) <= 1:
        return found[0] if found else None
    # Per couple and state: the outbox's (couple_id, state) index serves it.
    sent = (
        sa.select(Reminder.partner_id, sa.func.max(Reminder.sent_at).label("at"))
        .where(
            Reminder.couple_id.in_({p.couple_id for p in found}),
            Reminder.state.in_([ReminderState.SENT, ReminderState.DELIVERED]),
            Reminder.channel == Channel.SMS,
            Reminder.partner_id.in_([p.id for p in found]),
        )
        .group_by(Reminder.partner_id)
    )
    last = {pid: at for pid, at in session.execute(sent)}
    return max(
        found, key=lambda p: (last.get(p.id) is not None, last.get(p.id) or p.created_at, p.id)
    )


def _pause(t: Turn) -> Outcome:
    return pausing.pause(t.hearth, t.session, t.now, t.partner, t.parsed.argument)


def _resume(t: Turn) -> Outcome:
    return pausing.resume(t.hearth, t.session, t.now, t.partner, t.parsed.argument)


def _link(t: Turn) -> Outcome:
    token = page_tokens.issue(t.session, t.now, t.partner, t.hearth.keys)
    url = page_tokens.url(t.hearth.settings.web, token)
    return t.lang._(LINK_TEXT).format(url=url), "page link sent", None


def _no(t: Turn) -> Outcome:
    """NO answers a repair follow-up; otherwise it is a word like any other (an answer)."""
    followup = outgoing.latest_sent(t.session, t.partner, ReminderPurpose.FOLLOWUP)
    if _recent(followup, t.now):
        assert followup is not None
        return t.lang._(NOTED_TEXT), "follow-up answer", followup.ritual_id
    got = question.reply(t.hearth, t.session, t.now, t.partner, t.body)
    return got if got is not None else _gentle(t)


# Answered whatever the partner's consent (carriers require STOP, START and HELP to work).
ALWAYS: dict[str, Handler] = {
    **{w: _stop for w in STOP_WORDS},
    **{w: _start for w in START_WORDS},
    "YES": _start,  # JA, SÍ: the opt-in's answer (vocabulary.KEYWORDS)
    **{w: _help for w in HELP_WORDS},
}
# For a subscribed partner. Another command: its words in vocabulary.KEYWORDS, its handler
# here (and in HELP_TEXT if it fits).
COMMANDS: dict[str, Handler] = {
    "DONE": _done,
    "SKIP": _skip,
    "SNOOZE": _snooze,
    "REPAIR": _repair,
    "PAUSE": _pause,
    "RESUME": _resume,
    "NO": _no,
    "LINK": _link,
}
