"""PAUSE and RESUME by text: a partner pauses the couple (it always ends by itself) and the
other partner is told, each in their own language.

``PAUSE`` is one day, ``PAUSE 3D`` / ``PAUSE 2W`` / ``PAUSE 5`` (days; also ``3 TAGE``,
``2 WOCHEN``, ``3 DIAS``, ``2 SEMANAS``), ``PAUSE UNTIL SUN`` (a weekday: texts start again
that day, in the sender's zone; ``BIS SONNTAG`` / ``BIS SO``, ``HASTA EL DOMINGO``),
``PAUSE UNTIL TOMORROW`` (``MORGEN``, ``MAÑANA``) or ``PAUSE UNTIL 2026-12-24`` / ``24 DEC``
/ ``24.12.`` / ``24 DE DICIEMBRE``; never longer than :data:`MAX_DAYS`. Weekday and month
names are CLDR's for the partner's language, besides the English ones.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from functools import cache

from sqlalchemy.orm import Session

from service.core import i18n
from service.core.exceptions import Conflict
from service.core.i18n import N_, Lang
from service.core.timeutil import localize, zone
from service.db.context import Hearth
from service.db.models import Couple, Partner
from service.domain import couples
from service.replies import outgoing, repair
from service.replies.words import bare, fold

MAX_DAYS = 60
DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_SPAN = re.compile(
    r"(?P<n>\d{1,3})\s*(?P<unit>D|DAYS?|T|TAGE?|DIAS?|W|WKS?|WEEKS?|WOCHEN?|SEMANAS?)?"
)
_UNTIL = re.compile(r"^(?:UNTIL|TIL|BIS|HASTA)\b\s*(?:(?:ZUM|AM|EL)\b\s*)?")
_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
# 24.12., 24.12.2026, 24/12 (day first, as German and Spanish write it)
_NUMERIC = re.compile(r"(\d{1,2})[./](\d{1,2})(?:[./](\d{4}|\d{2}))?")
_DAY_MONTH = re.compile(r"(?:(\d{1,2})\.?\s*(?:DE\s+)?([A-Z]{3,})|([A-Z]{3,})\.?\s*(\d{1,2}))")
_TOMORROW = frozenset({"TOMORROW", "TMRW", "MORGEN", "MANANA"})

BAD = N_("Hearth: try PAUSE, PAUSE 3D, PAUSE UNTIL SUN or PAUSE UNTIL 2026-12-24.")
PAST = N_("Hearth: that date has passed. Try PAUSE 3D or PAUSE UNTIL SUN.")
TOO_LONG = N_("Hearth: a pause by text lasts up to {days} days.")
PAUSED_NOTICE = N_(
    "Hearth: {name} paused your rituals until {when}. Reply RESUME to start again sooner."
)
PAUSED_TEXT = N_(
    "Hearth: paused until {when}; we've told your partner. Reply RESUME to start again sooner."
)
# When no channel reaches the other partner (no consent, STOP, unsubscribed): never claim
# they were told.
PAUSED_UNTOLD = N_(
    "Hearth: paused until {when}. We can't reach your partner, so please tell them yourself."
    " Reply RESUME to start again sooner."
)
RESUMED_NOTICE = N_("Hearth: {name} resumed your rituals.")
RESUMED_TEXT = N_("Hearth: welcome back, your rituals are on again.")
NOT_PAUSED = N_("Hearth: nothing is paused.")
Outcome = tuple[str | None, str, int | None]


@cache
def _names(language: str, kind: str) -> tuple[frozenset[str], ...]:
    """CLDR's weekday (from Monday) or month names in ``language``, folded both ways."""
    loc = i18n.lang(language).locale
    table = loc.days["format"]["wide"] if kind == "days" else loc.months["format"]["wide"]
    keys = range(7) if kind == "days" else range(1, 13)
    return tuple(frozenset({fold(table[k]), bare(table[k])}) for k in keys)


def _index(word: str, language: str, kind: str, shortest: int) -> int | None:
    """Which weekday/month ``word`` begins (at least ``shortest`` letters), in the partner's
    language first, then English."""
    if len(word) < shortest:
        return None
    for code in dict.fromkeys((language, i18n.DEFAULT)):
        for i, forms in enumerate(_names(code, kind)):
            if any(f.startswith(word) for f in forms):
                return i
    return None


def until(
    arg: str | None, now: datetime, tz_name: str, language: str = i18n.DEFAULT
) -> datetime | None:
    """When a pause asked for by ``arg`` (upper case, accents folded) ends; None if unread."""
    tz = zone(tz_name)
    today = now.astimezone(tz).date()
    if not arg:
        return now + timedelta(days=1)
    span = _SPAN.fullmatch(arg)
    if span is not None:
        n = int(span["n"]) * (7 if (span["unit"] or "D")[0] in "WS" else 1)
        return now + timedelta(days=n) if n else None
    text = _UNTIL.sub("", arg).strip(" .!")
    day = _date(text, today, language)
    return localize(day, time(0, 0), tz) if day is not None else None


def _date(text: str, today: date, language: str) -> date | None:
    if text.isalpha():
        if text in _TOMORROW:
            return today + timedelta(days=1)
        weekday = DAYS.index(text[:3]) if text[:3] in DAYS else _index(text, language, "days", 2)
        if weekday is None:
            return None
        return today + timedelta(days=(weekday - today.weekday()) % 7 or 7)
    try:
        if (m := _ISO.fullmatch(text)) is not None:
            return date(int(m[1]), int(m[2]), int(m[3]))
        if (m := _NUMERIC.fullmatch(text)) is not None and language != i18n.DEFAULT:
            return _next(today, int(m[2]), int(m[1]), m[3])
        if (m := _DAY_MONTH.fullmatch(text)) is not None:
            day, word = (m[1], m[2]) if m[1] else (m[4], m[3])
            month = _index(word, language, "months", 3)
            return None if month is None else _next(today, month + 1, int(day), None)
    except ValueError:
        return None
    return None


def _next(today: date, month: int, day: int, year: str | None) -> date:
    if year is not None:
        return date(int(year) + (2000 if len(year) == 2 else 0), month, day)
    found = date(today.year, month, day)
    return found if found > today else found.replace(year=today.year + 1)


def _until_text(t: Lang, end: datetime, tz_name: str) -> str:
    return t.day_time(end.astimezone(zone(tz_name)))


def pause_couple(session: Session, now: datetime, couple: Couple, end: datetime | None) -> bool:
    """Pause ``couple`` (by text, from the page or the CLI): a pending repair talk that
    would fall in the pause is called off and both partners are told. False, changing
    nothing, when the couple has this very pause already (PAUSE sent twice, a reload of
    the page): the other partner was told the first time and is not told again."""
    if couple.is_paused(now) and couple.paused_until == end:
        return False
    couples.pause(session, now, couple, end)
    repair.call_off_for_pause(session, now, couple)
    return True


def pause(
    hearth: Hearth, session: Session, now: datetime, partner: Partner, arg: str | None
) -> Outcome:
    t = i18n.lang(partner.language)
    end = until(arg, now, partner.timezone, t.code)
    if end is None:
        return t._(BAD), "pause: bad", None
    if end <= now:
        return t._(PAST), "pause: past", None
    if end > now + timedelta(days=MAX_DAYS):
        return t._(TOO_LONG).format(days=MAX_DAYS), "pause: too long", None
    if not pause_couple(session, now, partner.couple, end):
        mine = _until_text(t, end, partner.timezone)
        return t._(PAUSED_TEXT).format(when=mine), "pause: the same again", None
    told = False
    for other in outgoing.others(partner):
        theirs = i18n.lang(other.language)
        when = _until_text(theirs, end, other.timezone)
        notice = theirs._(PAUSED_NOTICE).format(name=partner.name, when=when)
        told = outgoing.tell(hearth, session, now, other, notice) or told
    mine = _until_text(t, end, partner.timezone)
    answer = t._(PAUSED_TEXT if told else PAUSED_UNTOLD).format(when=mine)
    return answer, f"paused until {end.isoformat()}", None


def resume(
    hearth: Hearth, session: Session, now: datetime, partner: Partner, arg: str | None
) -> Outcome:
    t = i18n.lang(partner.language)
    try:
        couples.resume(session, now, partner.couple)
    except Conflict:
        return t._(NOT_PAUSED), "resume: not paused", None
    for other in outgoing.others(partner):
        theirs = i18n.lang(other.language)
        outgoing.tell(
            hearth, session, now, other, theirs._(RESUMED_NOTICE).format(name=partner.name)
        )
    return t._(RESUMED_TEXT), "resumed", None
