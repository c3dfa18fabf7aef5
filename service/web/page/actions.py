"""What a partner can do on their own page: each write is the CLI's service function, so it
validates the same way, records the same domain event (the daemon replans on it) and refuses
with the same one-line message. Where it changes the other partner's nudges, they are told
by a notice on their own channels.

Each function runs inside the caller's transaction and raises a ``HearthError`` to refuse;
the caller rolls back, so a refused form leaves the database as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from sqlalchemy.orm import Session

from service.calendar import feed_keep
from service.core import i18n
from service.core.exceptions import Conflict, InvalidInput
from service.core.i18n import N_, Lang
from service.core.timeutil import zone
from service.db.context import Hearth
from service.db.models import Channel, ConsentState, Partner
from service.domain import answers, couples, notices, partners, rituals, skips, validation
from service.replies import pausing, question, repair
from service.web.page import tokens as page_tokens

SOURCE = "page"

# Texts to the other partner, in their language (SMS first: short, no names of rituals on
# a lock screen).
PAUSED_TEXT = N_("Hearth: {name} paused your reminders until {until}.")
PAUSED_THROUGH_TEXT = N_("Hearth: {name} paused your reminders through {day}.")
PAUSED_OPEN_TEXT = N_("Hearth: {name} paused your reminders until further notice.")
RESUMED_TEXT = N_("Hearth: {name} turned your reminders back on.")
SKIPPED_TEXT = N_("Hearth: {name} skipped the ritual on {day}; no reminder for that one.")


@dataclass(frozen=True)
class Done:
    """What happened: a code the page's templates turn into words, and, after a page link
    rotation, the new token to redirect to; ``feed``: a new feed token that could not be
    kept (no encryption keys), so the answer to this form is the one time it is shown."""

    code: str
    token: str | None = None
    feed: str | None = None


Form = dict[str, str]
Action = Callable[[Session, datetime, Partner, str, Form], Done]


def _others(partner: Partner) -> list[Partner]:
    return [p for p in partner.couple.partners if p.id != partner.id]


def _tell_others(session: Session, now: datetime, partner: Partner, text: str) -> None:
    for other in _others(partner):
        notices.tell(session, now, other, _lang(other)._(text).format(name=partner.name))


def _lang(p: Partner) -> Lang:
    return i18n.lang(p.language)


def pause(session: Session, now: datetime, partner: Partner, token: str, form: Form) -> Done:
    """Pause the couple's nudges through a date in the partner's zone (empty: until resumed)."""
    raw = form.get("until", "").strip()
    until = validation.until_datetime(raw, partner.timezone) if raw else None
    if not pausing.pause_couple(session, now, partner.couple, until):
        return Done("paused")  # the same pause again (a reload): the other was told already
    for other in _others(partner):
        notices.tell(session, now, other, _paused_text(partner.name, until, other))
    return Done("paused")


def _paused_text(name: str, until: datetime | None, other: Partner) -> str:
    """In the other partner's language and zone: a pause ending at midnight is 'through' the
    day before."""
    t = _lang(other)
    if until is None:
        return t._(PAUSED_OPEN_TEXT).format(name=name)
    local = until.astimezone(zone(other.timezone))
    if local.time() == time(0):
        day = t.day(local - timedelta(days=1))
        return t._(PAUSED_THROUGH_TEXT).format(name=name, day=day)
    return t._(PAUSED_TEXT).format(name=name, until=t.day_time(local))


def resume(session: Session, now: datetime, partner: Partner, token: str, form: Form) -> Done:
    couples.resume(session, now, partner.couple)
    _tell_others(session, now, partner, RESUMED_TEXT)
    return Done("resumed")


def skip(session: Session, now: datetime, partner: Partner, token: str, form: Form) -> Done:
    """Skip the next occurrence of one of the couple's rituals."""
    ritual = rituals.resolve(session, form.get("ritual", "").strip() or "?", partner.couple)
    rituals.ensure_active(ritual)
    upcoming = rituals.upcoming(ritual, now, 1)
    if not upcoming:
        raise InvalidInput("date", "no upcoming occurrence of this ritual")
    skips.skip(session, now, ritual, upcoming[0].original_start, source=SOURCE)
    for other in _others(partner):
        t = _lang(other)
        day = t.day(upcoming[0].start.astimezone(zone(other.timezone)))
        notices.tell(session, now, other, t._(SKIPPED_TEXT).format(name=partner.name, day=day))
    return Done("skipped")


def ask_repair(session: Session, now: datetime, partner: Partner, token: str, form: Form) -> Done:
    # The daemon finds the slot and invites both partners, as after a REPAIR text.
    repair.request(session, now, partner.couple, partner, SOURCE)
    return Done("repair")


def settings(session: Session, now: datetime, partner: Partner, token: str, form: Form) -> Done:
    """Quiet hours, timezone, channels, discreet or full texts, language: ``hearth partner
    edit``."""
    chosen = [c for c in (Channel.SMS, Channel.EMAIL) if form.get(f"channel_{c}") == "on"]
    # Quiet hours and the lock-screen style are offered only to a partner with a phone:
    # a form without them keeps them as they are.
    kept_quiet = partners.format_quiet(partner) if partners.quiet(partner) else ""
    style = form.get("text_style")
    partners.edit(
        session,
        now,
        partner,
        quiet_hours=form.get("quiet_hours", kept_quiet),
        timezone=form.get("timezone", partner.timezone),
        channels=",".join(chosen),
        full_text=partner.full_text if style is None else style == "full",
        language=form.get("language") or None,
    )
    return Done("saved")


def resubscribe(session: Session, now: datetime, partner: Partner, token: str, form: Form) -> Done:
    """Email back on after an unsubscribe (the person's own choice, like START by text)."""
    if not partner.email:
        raise InvalidInput("email", "there is no address to send to", "ask your Hearth admin")
    if partner.email_opted_out_at is None:
        raise Conflict("email: you are already subscribed")
    partners.set_consent(
        session, now, partner, ConsentState.CONSENTED, "page resubscribe", channel=Channel.EMAIL
    )
    return Done("resubscribed")


def rotate_feed(
    hearth: Hearth, session: Session, now: datetime, partner: Partner, token: str, form: Form
) -> Done:
    feed = feed_keep.issue(session, now, partner, hearth.keys)
    return Done("feed", feed=None if hearth.keys.configured else feed)


def rotate_page(
    hearth: Hearth, session: Session, now: datetime, partner: Partner, token: str, form: Form
) -> Done:
    return Done("link", page_tokens.issue(session, now, partner, hearth.keys))


def _occurrence(form: Form) -> tuple[int, datetime]:
    try:
        return int(form.get("ritual", "")), datetime.fromisoformat(form.get("occurrence", ""))
    except ValueError:
        raise InvalidInput("answer", "this form is incomplete", "reload the page") from None


def answer(
    hearth: Hearth, session: Session, now: datetime, partner: Partner, token: str, form: Form
) -> Done:
    """The partner's answer to the open question, as if texted: kept sealed, revealed to both
    once both answered (service/replies/question.py). Only to the occurrence the page showed:
    a form left open past its close never lands on the next one."""
    text = form.get("answer", "").strip()
    if not text:
        raise InvalidInput("answer", "write a few words first")
    if len(text) > question.MAX_ANSWER:
        raise InvalidInput("answer", f"at most {question.MAX_ANSWER} characters, please")
    if not hearth.keys.configured:
        raise Conflict("answer: answers cannot be kept yet; ask your Hearth admin")
    ritual_id, occ = _occurrence(form)
    found = answers.open_question(session, partner.couple, now, hearth.settings.replies.grace)
    if found is None or found.ritual.id != ritual_id or found.occurrence != occ:
        raise Conflict("answer: this question has closed; reload the page")
    row = answers.get(session, ritual_id, occ, partner.id)
    if row is not None and row.revealed_at is not None:
        raise Conflict("answer: your answers were shared already, so it stays as it is")
    ritual, prompt = found.ritual, found.prompt_id
    question.answer(hearth, session, now, partner, ritual, occ, prompt, text, None, False)
    return Done("answered")


def forget(
    hearth: Hearth, session: Session, now: datetime, partner: Partner, token: str, form: Form
) -> Done:
    """Forget the partner's own answer for good (the other's stays theirs)."""
    ritual_id, occ = _occurrence(form)
    answers.forget(session, now, partner, ritual_id, occ)
    return Done("forgotten")


HearthAction = Callable[[Hearth, Session, datetime, Partner, str, Form], Done]
# Forms that need the service context: the keys that seal an answer or keep a feed token,
# the outbox a reveal goes through.
HEARTH_ACTIONS: dict[str, HearthAction] = {
    "answer": answer,
    "forget": forget,
    "rotate-feed": rotate_feed,
    "rotate-link": rotate_page,
}

ACTIONS: dict[str, Action] = {
    "pause": pause,
    "resume": resume,
    "skip": skip,
    "repair": ask_repair,
    "settings": settings,
    "resubscribe": resubscribe,
}
