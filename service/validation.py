"""Parsing and validation of everything a person types: one clear error per bad value.

Each function returns the normalised value or raises :class:`InvalidInput` naming the field.
"""

from __future__ import annotations

import difflib
import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import phonenumbers
from dateutil.rrule import DAILY, MONTHLY, WEEKLY, YEARLY, rrulestr
from email_validator import EmailNotValidError, validate_email

from service.exceptions import InvalidInput
from service.models import Channel, RitualKind
from service.recurrence import split_until, until_instant
from service.timeutil import UTC, localize, zone

WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_DURATION = re.compile(r"^(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?$|^(\d+)$", re.IGNORECASE)


def timezone(value: str, field: str = "timezone") -> str:
    value = value.strip()
    try:
        if not value or value.startswith(("/", ".")) or ".." in value:
            raise ValueError
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        hint = _suggest_zone(value)
        raise InvalidInput(field, f"unknown timezone {value!r}", hint) from None
    return value


def _suggest_zone(value: str) -> str:
    tail = value.split("/")[-1].lower().replace(" ", "_")
    zones = sorted(available_timezones())
    matches = [z for z in zones if tail and tail in z.lower()]
    if not matches:  # a typo: the closest names by spelling
        by_lower = {z.lower(): z for z in zones}
        close = difflib.get_close_matches(value.lower(), by_lower, n=3, cutoff=0.9)
        matches = [by_lower[c] for c in close]
    if matches:
        return "did you mean " + " or ".join(matches[:3]) + "?"
    return "use an IANA name such as Europe/Berlin or America/New_York"


def phone(value: str, region: str, field: str = "phone") -> str:
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise InvalidInput(field, f"{value!r} is not a phone number", "use +14155550123") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidInput(
            field,
            f"{value!r} is not a valid number for its region",
            "use E.164, e.g. +4915123456789",
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def email(value: str, field: str = "email") -> str:
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidInput(field, f"{value!r} is not a valid email address: {exc}") from None


def clock_time(value: str, field: str = "time") -> time:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise InvalidInput(field, f"{value!r} is not a time of day", "use HH:MM, e.g. 21:00")
    return time(int(m[1]), int(m[2]))


def quiet_hours(value: str, field: str = "quiet hours") -> tuple[time, time] | None:
    """``22:00-07:30`` (may wrap midnight); ``off`` or empty clears them."""
    value = value.strip()
    if value.lower() in ("", "off", "none"):
        return None
    start, sep, end = value.partition("-")
    if not sep:
        raise InvalidInput(field, f"{value!r} is not a range", "use HH:MM-HH:MM, e.g. 22:00-07:30")
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
            raise InvalidInput(field, f"{value!r} is not a duration", "use 5m, 2h or 1h30m")
        minutes = int(m[3]) if m[3] else int(m[1] or 0) * 60 + int(m[2] or 0)
    if not 1 <= minutes <= 7 * 1440:
        raise InvalidInput(field, f"{value!r} is out of range", "between 1 minute and 7 days")
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
            raise InvalidInput(field, f"unknown channel {part!r}", "use sms, email") from None
        if ch not in out:
            out.append(ch)
    return out


def kind(value: str, field: str = "kind") -> RitualKind:
    try:
        return RitualKind(value.strip().lower().replace("-", "_"))
    except ValueError:
        names = ", ".join(k.value for k in RitualKind)
        raise InvalidInput(field, f"unknown kind {value!r}", f"one of {names}") from None


_ALLOWED_FREQ = {DAILY: "DAILY", WEEKLY: "WEEKLY", MONTHLY: "MONTHLY", YEARLY: "YEARLY"}


def rrule(value: str, dtstart: date, tz: str, field: str = "rrule") -> str:
    """Validate an RFC 5545 RRULE (without DTSTART). Sub-daily rules are refused: a ritual
    happens at most once a day, which protects partners from floods."""
    text = value.strip().removeprefix("RRULE:").strip().upper()
    if not text or "\n" in text:
        raise InvalidInput(field, "empty RRULE", "e.g. FREQ=WEEKLY;BYDAY=FR")
    keys = {p.partition("=")[0] for p in text.split(";") if p}
    if "FREQ" not in keys:
        raise InvalidInput(field, f"{value!r} has no FREQ", "e.g. FREQ=DAILY")
    for banned in ("BYHOUR", "BYMINUTE", "BYSECOND", "DTSTART"):
        if banned in keys:
            raise InvalidInput(field, f"{banned} is not allowed", "the time comes from --at")
    rule, until = split_until(text)
    try:
        parsed = rrulestr(rule, dtstart=datetime.combine(dtstart, time(0)), cache=False)
        if until:
            until_instant(until, tz)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(field, f"{value!r} is not a valid RRULE: {exc}") from None
    freq = getattr(parsed, "_freq", None)
    if freq not in _ALLOWED_FREQ:
        raise InvalidInput(field, "a ritual happens at most daily", "use FREQ=DAILY or slower")
    interval = getattr(parsed, "_interval", 1)
    if interval < 1:
        raise InvalidInput(field, "INTERVAL must be at least 1")
    return text


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
            raise InvalidInput(field, f"{value!r}: weekdays are MO,TU,WE,TH,FR,SA,SU", hint)
        return "FREQ=WEEKLY;BYDAY=" + ",".join(days)
    if head == "monthly":
        if re.fullmatch(r"-?[1-4]?(MO|TU|WE|TH|FR|SA|SU)", arg) and arg[:-2] not in ("", "-"):
            return f"FREQ=MONTHLY;BYDAY={arg}"
        if arg.isdigit() and 1 <= int(arg) <= 31:
            return f"FREQ=MONTHLY;BYMONTHDAY={int(arg)}"
        raise InvalidInput(
            field, f"{value!r}: use monthly:1SA (first Saturday) or monthly:15", hint
        )
    if head == "yearly":
        m = re.fullmatch(r"(\d{2})-(\d{2})", arg)
        if m:
            try:
                date(2024, int(m[1]), int(m[2]))
            except ValueError:
                raise InvalidInput(field, f"{value!r}: no such date", hint) from None
            return f"FREQ=YEARLY;BYMONTH={int(m[1])};BYMONTHDAY={int(m[2])}"
        raise InvalidInput(field, f"{value!r}: use yearly:MM-DD", hint)
    raise InvalidInput(field, f"unknown schedule {value!r}", hint)


def local_date(value: str, field: str = "date") -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInput(field, f"{value!r} is not a date", "use YYYY-MM-DD") from None


def local_datetime(value: str, field: str = "datetime") -> datetime:
    """A naive local date-time (``YYYY-MM-DD HH:MM`` or ISO ``T``)."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError:
        raise InvalidInput(
            field, f"{value!r} is not a date and time", "use 'YYYY-MM-DD HH:MM'"
        ) from None
    if parsed.tzinfo is not None:
        raise InvalidInput(field, "give local wall time without an offset")
    return parsed


def name(value: str, field: str = "name", max_len: int = 120) -> str:
    text = " ".join(value.split())
    if not text:
        raise InvalidInput(field, "must not be empty")
    if len(text) > max_len:
        raise InvalidInput(field, f"longer than {max_len} characters")
    if text.isdigit():
        raise InvalidInput(field, "must not be only digits (those are read as ids)")
    return text


def snooze_minutes(value: str | None, default: int = 30, field: str = "snooze") -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or not 1 <= int(value) <= 720:
        raise InvalidInput(field, f"{value!r} is not a number of minutes", "1 to 720")
    return int(value)


def until_datetime(value: str, tz: str, field: str = "until") -> datetime:
    """A local date or date-time in ``tz`` -> aware UTC."""
    v = value.strip()
    if len(v) == 10:
        d = local_date(v, field)
        return localize(d + timedelta(days=1), time(0), zone(tz))
    dt = local_datetime(v, field)
    return localize(dt.date(), dt.time(), zone(tz))


def since(value: str, now: datetime, field: str = "since") -> datetime:
    """A UTC date (YYYY-MM-DD) or a span back from now (90m, 24h, 7d)."""
    v = value.strip().lower()
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if v[:-1].isdigit() and v[-1:] in units:
        return now - timedelta(**{units[v[-1]]: int(v[:-1])})
    try:
        return datetime.combine(date.fromisoformat(v), time(0), tzinfo=UTC)
    except ValueError:
        raise InvalidInput(
            field, f"{value!r} is not a date or span", "e.g. 2026-01-05 or 24h"
        ) from None
