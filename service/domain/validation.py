"""Parsing and validation of everything a person types: one clear error per bad value.

Each function returns the normalised value or raises :class:`InvalidInput` naming the field.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from datetime import date, datetime, time, timedelta

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from service.core.exceptions import InvalidInput
from service.core.text import echo
from service.core.timeutil import UTC, is_zone, known_zones, localize, zone
from service.db.models import Channel, RitualKind
from service.domain.rrules import WEEKDAYS
from service.domain.rrules import rrule as rrule  # validation.rrule, as callers know it

_DURATION = re.compile(r"^(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?$|^(\d+)$", re.IGNORECASE)


def timezone(value: str, field: str = "timezone") -> str:
    value = value.strip()
    if not is_zone(value):
        raise InvalidInput(field, f"unknown timezone {echo(value)}", _suggest_zone(value))
    return value


def _suggest_zone(value: str) -> str:
    example = "use an IANA name such as Europe/Berlin or America/New_York"
    if value.startswith(("/", ".")):  # a file such as /etc/localtime: its name is wanted
        return f"{example} (timedatectl shows this machine's)"
    zones = sorted(known_zones())
    region = [z for z in zones if value and z.lower().startswith(value.lower().rstrip("/") + "/")]
    if region:  # a tzdata folder (Europe, America/Argentina): a region, not a zone
        return f"{value} is a region: e.g. " + " or ".join(region[:3])
    tail = value.split("/")[-1].lower().replace(" ", "_")
    matches = [z for z in zones if tail and tail in z.lower()]
    if not matches:  # a typo: the closest names by spelling
        by_lower = {z.lower(): z for z in zones}
        close = difflib.get_close_matches(value.lower()[:80], by_lower, n=3, cutoff=0.9)
        matches = [by_lower[c] for c in close]
    if matches:
        return "did you mean " + " or ".join(matches[:3]) + "?"
    return example


def phone(value: str, region: str, field: str = "phone") -> str:
    if value.strip().startswith("++"):  # phonenumbers would take it; it is a slip
        raise InvalidInput(field, "has two + signs", "use E.164, e.g. +4915123456789")
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise InvalidInput(
            field,
            f"{echo(value)} is not a phone number",
            "use +14155550123",
            public="not a phone number",
        ) from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidInput(
            field,
            f"{echo(value)} is not a valid number for its region",
            "use E.164, e.g. +4915123456789",
            public="not a valid number for its region",
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def email(value: str, field: str = "email") -> str:
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidInput(
            field,
            f"{echo(value)} is not a valid email address: {exc}",
            public="not a valid email address",
        ) from None


def clock_time(value: str, field: str = "time") -> time:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise InvalidInput(field, f"{echo(value)} is not a time of day", "use HH:MM, e.g. 21:00")
    return time(int(m[1]), int(m[2]))


def quiet_hours(value: str, field: str = "quiet hours") -> tuple[time, time] | None:
    """``22:00-07:30`` (may wrap midnight); ``off`` or empty clears them."""
    value = value.strip()
    if value.lower() in ("", "off", "none"):
        return None
    start, sep, end = value.partition("-")
    if not sep:
        raise InvalidInput(
            field, f"{echo(value)} is not a range", "use HH:MM-HH:MM, e.g. 22:00-07:30"
        )
    s, e = clock_time(start, field), clock_time(end, field)
    if s == e:
        raise InvalidInput(field, "start and end are the same", "use off to clear quiet hours")
    return s, e


def duration_minutes(value: str | int, field: str = "duration") -> int:
    """``5``, ``5m``, ``2h``, ``1h30m``, ``1d`` -> minutes (1 to 7 days)."""
    text = str(value).strip().lower().replace(" ", "")
    if text.endswith("d") and text[:-1].isdigit():
        minutes = int(text[:-1]) * 1440
    else:
        m = _DURATION.fullmatch(text)
        if not text or not m or not any(m.groups()):
            raise InvalidInput(field, f"{echo(value)} is not a duration", "use 5m, 2h or 1h30m")
        minutes = int(m[3]) if m[3] else int(m[1] or 0) * 60 + int(m[2] or 0)
    if not 1 <= minutes <= 7 * 1440:
        raise InvalidInput(field, f"{echo(value)} is out of range", "between 1 minute and 7 days")
    return minutes


def offsets(value: str, field: str = "remind") -> list[int]:
    """``0,30m,2h`` -> sorted minutes before the start (0 to 7 days), unique."""
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    if not parts:
        raise InvalidInput(field, "no reminder offsets given", "use e.g. 0,30m")
    result = set()
    for p in parts:
        result.add(0 if p in ("0", "0m") else duration_minutes(p, field))
    if len(result) > 5:
        raise InvalidInput(field, "at most 5 reminder offsets")
    return sorted(result, reverse=True)


def channels(value: str, field: str = "channel") -> list[Channel]:
    out: list[Channel] = []
    for part in (p.strip().lower() for p in value.split(",")):
        if not part:
            continue
        try:
            ch = Channel(part)
        except ValueError:
            raise InvalidInput(field, f"unknown channel {echo(part)}", "use sms, email") from None
        if ch not in out:
            out.append(ch)
    return out


def kind(value: str, field: str = "kind", exclude: RitualKind | None = None) -> RitualKind:
    """A ritual kind; ``exclude`` is one that may be named but is not offered in the hint."""
    try:
        return RitualKind(value.strip().lower().replace("-", "_"))
    except ValueError:
        names = ", ".join(k.value for k in RitualKind if k is not exclude)
        raise InvalidInput(field, f"unknown kind {echo(value)}", f"one of {names}") from None


def every(value: str, field: str = "every") -> str:
    """Shorthand schedules -> RRULE: daily, weekdays, weekly:MO,TH, monthly:1SA or
    monthly:15, yearly:06-14."""
    v = value.strip().lower()
    if v == "daily":
        return "FREQ=DAILY"
    if v == "weekdays":
        return "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
    head, _, arg = v.partition(":")
    arg = arg.upper()
    hint = "daily, weekdays, weekly:MO,TH, monthly:1SA, monthly:15 or yearly:06-14"
    if head == "weekly":
        days = [d.strip() for d in arg.split(",") if d.strip()] or []
        if not days or any(d not in WEEKDAYS for d in days):
            raise InvalidInput(field, f"{echo(value)}: weekdays are MO,TU,WE,TH,FR,SA,SU", hint)
        return "FREQ=WEEKLY;BYDAY=" + ",".join(days)
    if head == "monthly":
        if re.fullmatch(r"-?[1-4]?(MO|TU|WE|TH|FR|SA|SU)", arg) and arg[:-2] not in ("", "-"):
            return f"FREQ=MONTHLY;BYDAY={arg}"
        if arg.isdigit() and 1 <= int(arg) <= 31:
            return f"FREQ=MONTHLY;BYMONTHDAY={int(arg)}"
        raise InvalidInput(
            field, f"{echo(value)}: use monthly:1SA (first Saturday) or monthly:15", hint
        )
    if head == "yearly":
        m = re.fullmatch(r"(\d{2})-(\d{2})", arg)
        if m:
            try:
                date(2024, int(m[1]), int(m[2]))
            except ValueError:
                raise InvalidInput(field, f"{echo(value)}: no such date", hint) from None
            return f"FREQ=YEARLY;BYMONTH={int(m[1])};BYMONTHDAY={int(m[2])}"
        raise InvalidInput(field, f"{echo(value)}: use yearly:MM-DD", hint)
    raise InvalidInput(field, f"unknown schedule {echo(value)}", hint)


# The latest date accepted anywhere: a day short of datetime's limit, so "the end of that
# local day" and local-to-UTC conversions of anything a person can type never overflow.
LATEST_DATE = date(9998, 12, 31)
# Nothing in Hearth starts before this; far older dates would have every calendar walk
# centuries of recurrences (and year 1 has no year before it for the time zone tables).
EARLIEST_DATE = date(1970, 1, 1)


def _in_range(day: date, value: str, field: str, hint: str | None = None) -> None:
    if day < EARLIEST_DATE:
        raise InvalidInput(
            field, f"{echo(value)} is too long ago", f"the earliest is {EARLIEST_DATE}"
        )
    if day > LATEST_DATE:
        raise InvalidInput(
            field, f"{echo(value)} is too far ahead", hint or f"the latest is {LATEST_DATE}"
        )


def local_date(value: str, field: str = "date", hint: str | None = None) -> date:
    try:
        parsed = date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(field, f"{echo(value)} is not a date", "use YYYY-MM-DD") from None
    _in_range(parsed, value, field, hint)
    return parsed


def local_datetime(value: str, field: str = "datetime", hint: str | None = None) -> datetime:
    """A naive local date-time (``YYYY-MM-DD HH:MM`` or ISO ``T``)."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError:
        raise InvalidInput(
            field, f"{echo(value)} is not a date and time", "use 'YYYY-MM-DD HH:MM'"
        ) from None
    if parsed.tzinfo is not None:
        raise InvalidInput(field, "give local wall time without an offset")
    _in_range(parsed.date(), value, field, hint)
    return parsed


# Line and tab breaks a person types; every other control (\x0b, \x0c, \x1c, U+0085...),
# surrogate and line/paragraph separator (U+2028/9) is refused, not folded into a space: a
# strict iCalendar reader rejects the whole feed over one, and SMS and email garble them.
_TYPED = frozenset("\t\n\r")
_CONTROL = frozenset({"Cc", "Cs", "Zl", "Zp"})


def controls(value: str) -> bool:
    return any(unicodedata.category(ch) in _CONTROL and ch not in _TYPED for ch in value)


def name(value: str, field: str = "name", max_len: int = 120) -> str:
    text = " ".join(value.split())
    if controls(value):
        # NUL cannot be stored on PostgreSQL; the other controls garble a terminal or a feed.
        raise InvalidInput(field, "must not contain control characters")
    if not text:
        raise InvalidInput(field, "must not be empty")
    if len(text) > max_len:
        raise InvalidInput(field, f"longer than {max_len} characters")
    if text.isdigit():
        raise InvalidInput(field, "must not be only digits (those are read as ids)")
    return text


def plain(text: str) -> str:
    """Text a partner sent (an answer by SMS or email), which cannot be refused back to them:
    the controls :func:`name` refuses become spaces before it reaches anyone else."""
    if not controls(text):
        return text
    return "".join(
        " " if ch not in _TYPED and unicodedata.category(ch) in _CONTROL else ch for ch in text
    )


def free_text(value: str, field: str = "description", max_len: int = 2000) -> str:
    """Text that reaches a feed, an SMS or an email besides a name (a ritual's description):
    lines kept, controls refused like in :func:`name`."""
    if controls(value):  # before stripping: Python counts \x0b, \x1c, U+0085 as white space
        raise InvalidInput(field, "must not contain control characters")
    lines = value.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    text = "\n".join(line.rstrip() for line in lines).strip()
    if len(text) > max_len:
        raise InvalidInput(field, f"longer than {max_len} characters")
    return text


def until_datetime(value: str, tz: str, field: str = "until") -> datetime:
    """A local date or date-time in ``tz`` -> aware UTC."""
    v = value.strip()
    # "Forever" is no --until at all; a far-off date is more likely a slip.
    hint = f"the latest is {LATEST_DATE}; leave out --until to pause until resumed"
    if len(v) == 10:
        d = local_date(v, field, hint)
        return localize(d + timedelta(days=1), time(0), zone(tz))
    dt = local_datetime(v, field, hint)
    return localize(dt.date(), dt.time(), zone(tz))


def since(value: str, now: datetime, field: str = "since") -> datetime:
    """A UTC date (YYYY-MM-DD) or a span back from now (90m, 24h, 7d)."""
    v = value.strip().lower()
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if v[:-1].isascii() and v[:-1].isdigit() and v[-1:] in units:
        try:
            return now - timedelta(**{units[v[-1]]: int(v[:-1])})
        except OverflowError:
            raise InvalidInput(field, f"{echo(value)} reaches back past year 1") from None
    try:
        return datetime.combine(date.fromisoformat(v), time(0), tzinfo=UTC)
    except ValueError:
        raise InvalidInput(
            field, f"{echo(value)} is not a date or span", "e.g. 2026-01-05 or 24h"
        ) from None
