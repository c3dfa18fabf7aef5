"""PAUSE and RESUME by text: a partner pauses the couple (it always ends by itself) and the
other partner is told.

``PAUSE`` is one day, ``PAUSE 3D`` / ``PAUSE 2W`` / ``PAUSE 5`` (days), ``PAUSE UNTIL SUN``
(a weekday: texts start again that day, in the sender's zone) or ``PAUSE UNTIL 2026-12-24``
/ ``PAUSE UNTIL 24 DEC``; never longer than :data:`MAX_DAYS`.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

from sqlalchemy.orm import Session

from service.core.exceptions import Conflict
from service.core.timeutil import localize, zone
from service.db.context import Hearth
from service.db.models import Partner
from service.domain import couples
from service.replies import outgoing

MAX_DAYS = 60
DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_SPAN = re.compile(r"(?P<n>\d{1,3})\s*(?P<unit>D|DAYS?|W|WKS?|WEEKS?)?")
_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_DAY_MONTH = re.compile(r"(?:(\d{1,2})\s*([A-Z]{3})[A-Z]*|([A-Z]{3})[A-Z]*\s*(\d{1,2}))")
BAD = "Hearth: try PAUSE, PAUSE 3D, PAUSE UNTIL SUN or PAUSE UNTIL 2026-12-24."
Outcome = tuple[str | None, str, int | None]


def until(arg: str | None, now: datetime, tz_name: str) -> datetime | None:
    """When a pause asked for by ``arg`` (upper case, accents folded) ends; None if unread."""
    tz = zone(tz_name)
    today = now.astimezone(tz).date()
    if not arg:
        return now + timedelta(days=1)
    span = _SPAN.fullmatch(arg)
    if span is not None:
        n = int(span["n"]) * (7 if (span["unit"] or "D").startswith("W") else 1)
        return now + timedelta(days=n) if n else None
    text = arg.removeprefix("UNTIL").strip(" .!")
    day = _date(text, today)
    return localize(day, time(0, 0), tz) if day is not None else None


def _date(text: str, today: date) -> date | None:
    if text[:3] in DAYS and text.isalpha():
        ahead = (DAYS.index(text[:3]) - today.weekday()) % 7
        return today + timedelta(days=ahead or 7)
    if text in ("TOMORROW", "TMRW"):
        return today + timedelta(days=1)
    m = _ISO.fullmatch(text)
    try:
        if m is not None:
            return date(int(m[1]), int(m[2]), int(m[3]))
        m = _DAY_MONTH.fullmatch(text)
        if m is not None:
            day, mon = (m[1], m[2]) if m[1] else (m[4], m[3])
            if mon not in MONTHS:
                return None
            found = date(today.year, MONTHS.index(mon) + 1, int(day))
            return found if found > today else found.replace(year=today.year + 1)
    except ValueError:
        return None
    return None


def pause(
    hearth: Hearth, session: Session, now: datetime, partner: Partner, arg: str | None
) -> Outcome:
    end = until(arg, now, partner.timezone)
    if end is None:
        return BAD, "pause: bad", None
    if end <= now:
        return "Hearth: that date has passed. " + BAD[len("Hearth: ") :], "pause: past", None
    if end > now + timedelta(days=MAX_DAYS):
        return f"Hearth: a pause by text lasts up to {MAX_DAYS} days.", "pause: too long", None
    couple = partner.couple
    couples.pause(session, now, couple, end)
    for other in outgoing.others(partner):
        local = end.astimezone(zone(other.timezone))
        outgoing.tell(
            hearth, session, now, other,
            f"Hearth: {partner.name} paused your rituals until {local:%a %d %b %H:%M}. "
            "Reply RESUME to start again sooner.",
        )  # fmt: skip
    mine = end.astimezone(zone(partner.timezone))
    return (
        f"Hearth: paused until {mine:%a %d %b %H:%M}; we've told your partner. "
        "Reply RESUME to start again sooner.",
        f"paused until {end.isoformat()}",
        None,
    )


def resume(
    hearth: Hearth, session: Session, now: datetime, partner: Partner, arg: str | None
) -> Outcome:
    try:
        couples.resume(session, now, partner.couple)
    except Conflict:
        return "Hearth: nothing is paused.", "resume: not paused", None
    for other in outgoing.others(partner):
        outgoing.tell(hearth, session, now, other, f"Hearth: {partner.name} resumed your rituals.")
    return "Hearth: welcome back, your rituals are on again.", "resumed", None
