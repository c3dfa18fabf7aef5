"""A zone's current rule, read from its TZif file, as RFC 5545 recurring observances.

A TZif file (RFC 8536) lists a zone's transitions up to some year and ends with a POSIX TZ
string, the rule in force after the last listed one (``CET-1CEST,M3.5.0,M10.5.0/3``). That
footer is what tz-database converters turn into an RRULE observance, so a VTIMEZONE that
ends with it never runs out. zoneinfo reads the same files and applies the same footer, so
the RRULE agrees with the instants the planner computes.
"""

from __future__ import annotations

import re
import struct
import zoneinfo
from calendar import monthrange
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path

from service.core.timeutil import UTC

_NAME = r"(?:<[^>]+>|[A-Za-z]+)"
_OFFSET = r"[+-]?\d{1,3}(?::\d{2}){0,2}"
_POSIX = re.compile(
    rf"^(?P<std>{_NAME})(?P<stdoff>{_OFFSET})"
    rf"(?:(?P<dst>{_NAME})(?P<dstoff>{_OFFSET})?"
    rf",(?P<start>M\d+\.\d\.\d)(?:/(?P<stime>{_OFFSET}))?"
    rf",(?P<end>M\d+\.\d\.\d)(?:/(?P<etime>{_OFFSET}))?)?$"
)
_DAYS = ("SU", "MO", "TU", "WE", "TH", "FR", "SA")  # POSIX numbers weekdays from Sunday = 0


@dataclass(frozen=True, slots=True)
class Change:
    """One yearly change: the month, week (1-4, 5 = last) and weekday (0 = Sunday) of the
    POSIX rule, and the local time of the change in the offset before it (may be < 0 or
    >= 24 h: RFC 8536 allows a change on the day before or after the named one)."""

    month: int
    week: int
    weekday: int
    at: timedelta
    before: timedelta
    after: timedelta
    name: str
    dst: bool

    def onset(self, year: int) -> datetime:
        """The local wall time (in ``before``) of the change in ``year``."""
        first = date(year, self.month, 1)
        day = 1 + (self.weekday - (first.weekday() + 1) % 7) % 7  # first such weekday
        day += 7 * (self.week - 1)
        while day > monthrange(year, self.month)[1]:
            day -= 7  # week 5 means the last one
        return datetime.combine(date(year, self.month, day), time(0)) + self.at

    def rrule(self) -> str | None:
        """The change as a yearly RRULE, or None when RFC 5545 cannot say it plainly."""
        shift = self.at // timedelta(days=1)  # the change happens this many days off
        weekday = _DAYS[(self.weekday + shift) % 7]
        base = f"FREQ=YEARLY;BYMONTH={self.month}"
        if shift == 0:
            week = -1 if self.week == 5 else self.week
            return f"{base};BYDAY={week}{weekday}"
        shortest = monthrange(2001, self.month)[1]  # a common year: February's 28
        if self.week == 5:
            days = range(-7 + shift, shift)
            ok = all(-shortest <= d <= -1 for d in days)
        else:
            days = range(7 * (self.week - 1) + 1 + shift, 7 * self.week + 1 + shift)
            ok = all(1 <= d <= shortest for d in days)
        if not ok:
            return None
        return f"{base};BYDAY={weekday};BYMONTHDAY={','.join(map(str, days))}"

    def time_of_day(self) -> timedelta:
        return self.at % timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Rule:
    """The footer: a fixed offset (``changes`` empty) or a yearly pair of changes."""

    offset: timedelta
    name: str
    changes: tuple[Change, ...]


def _offset(text: str, posix: bool = True) -> timedelta:
    sign = -1 if text.startswith("-") else 1
    parts = [int(p) for p in text.lstrip("+-").split(":")] + [0, 0]
    value = sign * timedelta(hours=parts[0], minutes=parts[1], seconds=parts[2])
    return -value if posix else value  # POSIX offsets count west of Greenwich as positive


def _name(text: str) -> str:
    return text.strip("<>")


def parse(footer: str) -> Rule | None:
    """A POSIX TZ string as a :class:`Rule`; None for a form this module does not handle."""
    m = _POSIX.match(footer)
    if m is None:
        return None
    std = _offset(m["stdoff"])
    if not m["dst"]:
        return Rule(std, _name(m["std"]), ())
    dst = _offset(m["dstoff"]) if m["dstoff"] else std + timedelta(hours=1)

    def change(
        spec: str, at: str | None, before: timedelta, after: timedelta, name: str, is_dst: bool
    ) -> Change:
        month, week, weekday = (int(x) for x in spec[1:].split("."))
        when = _offset(at, posix=False) if at else timedelta(hours=2)
        return Change(month, week, weekday, when, before, after, name, is_dst)

    return Rule(
        std,
        _name(m["std"]),
        (
            change(m["start"], m["stime"], std, dst, _name(m["dst"]), True),
            change(m["end"], m["etime"], dst, std, _name(m["std"]), False),
        ),
    )


def _tzif(key: str) -> bytes:
    """The TZif file zoneinfo reads for ``key`` (TZPATH first, then the tzdata package)."""
    for base in zoneinfo.TZPATH:
        path = Path(base) / key
        if path.is_file():
            return path.read_bytes()
    parts = key.split("/")
    node = resources.files("tzdata.zoneinfo").joinpath(*parts)
    return node.read_bytes()


@dataclass(frozen=True, slots=True)
class TzInfoFile:
    last_listed: datetime | None  # the newest transition the file lists explicitly
    rule: Rule | None  # the footer, in force after it (None: not one this module reads)


@lru_cache(maxsize=512)
def read(key: str) -> TzInfoFile:
    data = _tzif(key)
    if data[:4] != b"TZif" or data[4:5] == b"\0":
        return TzInfoFile(None, None)  # a version 1 file has no footer
    # Skip the version 1 block (32-bit times) to the version 2 header and its 64-bit times.
    counts = struct.unpack(">6l", data[20:44])
    isut, isstd, leap, timecnt, typecnt, charcnt = counts
    v1 = 44 + timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isut
    isut, isstd, leap, timecnt, typecnt, charcnt = struct.unpack(">6l", data[v1 + 20 : v1 + 44])
    body = v1 + 44
    times = struct.unpack(f">{timecnt}q", data[body : body + 8 * timecnt])
    end = body + timecnt * 9 + typecnt * 6 + charcnt + leap * 12 + isstd + isut
    footer = data[end:].strip(b"\n").decode("ascii")
    last = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=times[-1]) if times else None
    return TzInfoFile(last, parse(footer) if footer else None)
