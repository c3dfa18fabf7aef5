"""RRULE validation (RFC 5545 3.3.10): everything the RFC forbids is refused with one line
naming the part, rather than left to dateutil, which guesses."""

from __future__ import annotations

import re
from datetime import date, datetime, time

from dateutil.rrule import rrulestr

from service.core.exceptions import InvalidInput
from service.core.text import cut, echo
from service.domain.recurrence import split_until, until_instant

WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")

_FREQS = ("SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY")
_SUB_DAILY = frozenset(_FREQS[:3])
_RRULE_HINT = "e.g. FREQ=WEEKLY;BYDAY=FR"
# RFC 5545 3.3.10 number lists: (highest magnitude, whether a negative counts from the end).
# Zero is never valid: dateutil would quietly ignore BYMONTHDAY=0 and expand daily.
_NUMBER_LISTS = {
    "BYMONTH": (12, False),
    "BYMONTHDAY": (31, True),
    "BYYEARDAY": (366, True),
    "BYWEEKNO": (53, True),
    "BYSETPOS": (366, True),
}
_BYDAY = re.compile(r"([+-]?)(\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)")
_KNOWN_PARTS = ("FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "WKST", *_NUMBER_LISTS)
_UNTIL = re.compile(r"\d{8}(T\d{6}Z?)?")


def rrule(value: str, dtstart: date, tz: str, field: str = "rrule") -> str:
    """Validate an RFC 5545 RRULE (without DTSTART) and return it normalised: FREQ first,
    the other parts in the order given, numbers without signs or zeros they do not need.

    Everything RFC 5545 forbids is refused rather than left to dateutil, which guesses
    (BYMONTHDAY=0 becomes daily; COUNT with UNTIL is quietly accepted). Sub-daily rules are
    refused too: a ritual happens at most once a day, which protects partners from floods."""
    text = value.strip()
    if text[:6].upper() == "RRULE:":
        text = text[6:]
    text = text.strip().upper()
    if not text:
        raise InvalidInput(field, "empty RRULE", _RRULE_HINT)
    if "\n" in text or "\r" in text:
        raise InvalidInput(field, "an RRULE is one line", _RRULE_HINT)
    parts: dict[str, str] = {}
    for raw in text.split(";"):
        key, sep, val = (x.strip() for x in raw.partition("="))
        if not raw.strip():
            raise InvalidInput(field, f"{echo(value)} has an empty part", "one ';' between parts")
        if not sep or not key or not val:
            raise InvalidInput(field, f"{echo(raw.strip())} is not NAME=VALUE", _RRULE_HINT)
        if key in ("BYHOUR", "BYMINUTE", "BYSECOND", "DTSTART"):
            raise InvalidInput(field, f"{key} is not allowed", "the time comes from --at")
        if key not in _KNOWN_PARTS:
            raise InvalidInput(
                field, f"unknown part {cut(key)}", "known: " + ", ".join(_KNOWN_PARTS)
            )
        if key in parts:
            raise InvalidInput(field, f"{key} is given twice")
        parts[key] = val
    freq = parts.get("FREQ")
    if freq is None:
        raise InvalidInput(field, f"{echo(value)} has no FREQ", "e.g. FREQ=DAILY")
    if freq not in _FREQS:
        raise InvalidInput(
            field, f"FREQ={freq} is not a frequency", "DAILY, WEEKLY, MONTHLY, YEARLY"
        )
    if freq in _SUB_DAILY:
        raise InvalidInput(field, "a ritual happens at most daily", "use FREQ=DAILY or slower")
    if "COUNT" in parts and "UNTIL" in parts:
        raise InvalidInput(
            field, "COUNT and UNTIL cannot both be given", "RFC 5545: one or the other"
        )
    normal = {key: _rrule_part(key, val, parts, tz, field) for key, val in parts.items()}
    rule = ";".join([f"FREQ={freq}"] + [f"{k}={v}" for k, v in normal.items() if k != "FREQ"])
    try:  # what dateutil will expand must parse there too
        rrulestr(split_until(rule)[0], dtstart=datetime.combine(dtstart, time(0)), cache=False)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(field, f"{echo(value)} is not a valid RRULE: {exc}") from None
    return rule


def _rrule_part(key: str, val: str, parts: dict[str, str], tz: str, field: str) -> str:
    """One RRULE part's value, checked against RFC 5545 and normalised."""
    freq = parts["FREQ"]
    if key == "FREQ":
        return val
    if key in ("INTERVAL", "COUNT"):
        top = 1000 if key == "INTERVAL" else 100_000
        if not re.fullmatch(r"\d+", val):
            raise InvalidInput(
                field, f"{key}={cut(val)} is not a whole number", f"a whole number 1 to {top}"
            )
        if len(val) > 6 or not 1 <= int(val) <= top:
            raise InvalidInput(field, f"{key}={cut(val)} is out of range", f"1 to {top}")
        return str(int(val))
    if key == "UNTIL":
        try:
            if not _UNTIL.fullmatch(val):
                raise ValueError
            until_instant(val, tz)
        except ValueError:
            raise InvalidInput(
                field, f"UNTIL={cut(val)} is not a date", "YYYYMMDD or YYYYMMDDTHHMMSSZ"
            ) from None
        except OverflowError:
            raise InvalidInput(field, f"UNTIL={val} is too far ahead") from None
        return val
    if key == "WKST":
        if val not in WEEKDAYS:
            raise InvalidInput(field, f"WKST={cut(val)} is not a weekday", ",".join(WEEKDAYS))
        return val
    items = [x.strip() for x in val.split(",")]
    if any(not x for x in items):
        raise InvalidInput(field, f"{key}={cut(val)} has an empty item", "e.g. BYDAY=MO,TH")
    if key == "BYDAY":
        out = [_byday_item(item, freq, "BYWEEKNO" in parts, field) for item in items]
    else:
        top, negative = _NUMBER_LISTS[key]
        out = []
        for item in items:
            span = f"-{top} to -1 or 1 to {top}" if negative else f"1 to {top}"
            if not re.fullmatch(r"[+-]?\d+", item):
                raise InvalidInput(field, f"{key}={cut(item)} is not a number", span)
            n = int(item) if len(item) <= 4 else top + 1
            if n == 0 or abs(n) > top or (n < 0 and not negative):
                raise InvalidInput(field, f"{key}={cut(item)} is out of range", span)
            out.append(str(n))
        # RFC 5545 3.3.10: the parts that make no sense with this frequency.
        misfit = {
            "BYWEEKNO": freq != "YEARLY",
            "BYYEARDAY": freq in ("DAILY", "WEEKLY", "MONTHLY"),
            "BYMONTHDAY": freq == "WEEKLY",
            "BYSETPOS": not set(parts) & ({"BYDAY", *_NUMBER_LISTS} - {"BYSETPOS"}),
        }
        if misfit.get(key):
            need = "another BY... part" if key == "BYSETPOS" else "a different FREQ"
            raise InvalidInput(field, f"{key} does not go with FREQ={freq}", f"needs {need}")
    return ",".join(dict.fromkeys(out))  # duplicates dropped, order kept


def _byday_item(item: str, freq: str, weekno: bool, field: str) -> str:
    m = _BYDAY.fullmatch(item)
    if not m:
        raise InvalidInput(field, f"BYDAY={cut(item)} is not a weekday", "e.g. MO, 1SA or -1SU")
    sign, number, day = m.groups()
    if number is None:
        if sign:
            raise InvalidInput(field, f"BYDAY={item} has a sign without a number", "e.g. -1SU")
        return day
    n = int(number)
    # An ordinal picks "the nth weekday" of a month or year; other frequencies have none.
    if freq not in ("MONTHLY", "YEARLY") or (freq == "YEARLY" and weekno):
        raise InvalidInput(
            field, f"BYDAY={item}: a numbered weekday needs FREQ=MONTHLY or YEARLY", "e.g. MO"
        )
    top = 5 if freq == "MONTHLY" else 53
    if not 1 <= n <= top:
        raise InvalidInput(field, f"BYDAY={item} is out of range", f"1 to {top} or -{top} to -1")
    return f"{'-' if sign == '-' else ''}{n}{day}"
