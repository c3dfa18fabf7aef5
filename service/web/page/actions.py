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

from service.core import i18n
from service.core.exceptions import Conflict, InvalidInput
from service.core.i18n import N_, Lang
from service.core.timeutil import zone
from service.db.models import Channel, ConsentState, Partner
from service.domain import couples, notices, partners, rituals, skips, validation
from service.replies import repair
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
    rotation, the new token to redirect to."""

    code: str
    token: str | None = None


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
    couples.pause(session, now, partner.couple, until)
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
    partners.edit(
        session,
        now,
        partner,
        quiet_hours=form.get("quiet_hours", ""),
        timezone=form.get("timezone", partner.timezone),
        channels=",".join(chosen),
        full_text=form.get("text_style") == "full",
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


def rotate_feed(session: Session, now: datetime, partner: Partner, token: str, form: Form) -> Done:
    page_tokens.issue_feed(session, now, partner, token)
    return Done("feed")


def rotate_page(session: Session, now: datetime, partner: Partner, token: str, form: Form) -> Done:
    return Done("link", page_tokens.issue(session, now, partner, current=token))


ACTIONS: dict[str, Action] = {
    "pause": pause,
    "resume": resume,
    "skip": skip,
    "repair": ask_repair,
    "settings": settings,
    "resubscribe": resubscribe,
    "rotate-feed": rotate_feed,
    "rotate-link": rotate_page,
}
