"""The calendar cross-check: a feed as three independent readers expand it, against what the
planner sends, to the second, for start, end and every reminder of every occurrence.

Readers: recurring-ical-events (on icalendar; computes alarms itself), Mozilla's ical.js (node,
from tests/js's lockfile; the VTIMEZONE is what it reads), and allenporter's ``ical`` (the
library behind Home Assistant's calendars: its own parser, recurrence and override handling,
and the IANA zone named by TZID, as Google and Outlook resolve it). Between them they cover
both ways clients resolve a TZID and three implementations of RRULE, EXDATE and overrides.

Scenario: in each zone, rituals daily, weekly, monthly and yearly at the exact onset, inside
and at the exact end of every gap and fold of 2027 (and at 21:00), lasting across them, with
offsets of minutes, hours, whole days and a day and an hour; skips and moves (into a gap and
onto a repeated time). Windows: 2026-2027 (two DST years) and 2045, from a feed built in
January 2026: it has to stay right for twenty years without a refresh.
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import recurring_ical_events
import sqlalchemy as sa
from ical.calendar_stream import IcsCalendarStream
from icalendar import Calendar

from service.calendar.vtimezone import transitions
from service.db.engine import Database
from service.db.models import Ritual
from service.domain import rituals, skips
from service.domain.recurrence import occurrences, schedule_of
from service.outbox import planner
from tests.factories import add_ritual, couple_with_partners

ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "America/St_Johns",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kathmandu",
    "America/Sao_Paulo",
    "Europe/London",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Asia/Tehran",
    "Africa/Casablanca",
    "Pacific/Kiritimati",
)
WINDOWS = (
    (datetime(2026, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)),
    (datetime(2045, 1, 1, tzinfo=UTC), datetime(2046, 1, 1, tzinfo=UTC)),
)
JS = Path(__file__).parent / "js" / "occurrences.mjs"

Windows = tuple[tuple[datetime, datetime], ...]
# Seen: (start, end, sorted reminder instants) of each occurrence, per UID, sorted by start.
Seen = dict[str, list[tuple[datetime, datetime, tuple[datetime, ...]]]]


@dataclass(frozen=True)
class Kind:
    name: str
    duration: str
    remind: str
    rule: str  # {day}, {wd}, {month} are filled in from the transition's local date


KINDS = (
    Kind("daily", "45m", "0,30m", "FREQ=DAILY"),
    Kind("weekly", "90m", "1h,1d", "FREQ=WEEKLY;BYDAY={wd}"),
    Kind("monthly", "30m", "1d,7d", "FREQ=MONTHLY;BYMONTHDAY={day}"),
    Kind("yearly", "2h", "0,1500m", "FREQ=YEARLY;BYMONTH={month};BYMONTHDAY={day}"),
)
_WD = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


def unclear_walls(tz: str) -> list[tuple[date, list[time], str]]:
    """The local day and wall times of each 2027 gap and fold: its onset, a time inside it,
    its exact end, and a time before it that lasts across it."""
    out = []
    start, end = datetime(2027, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)
    for t in transitions(tz, start, end):
        jump = t.after - t.before
        if not jump:
            continue
        onset = (t.at + t.before).replace(tzinfo=None)  # the wall clock just before it
        lo, hi = (onset, onset + jump) if jump > timedelta(0) else (onset + jump, onset)
        walls = [lo, lo + (hi - lo) / 2, hi, lo - timedelta(minutes=30)]
        out.append((lo.date(), [w.time() for w in walls], "gap" if jump > timedelta(0) else "fold"))
    return out


def build(
    db: Database, now: datetime, tz: str, sample: bool = False, couple_id: int | None = None
) -> int:
    """The scenario's rituals in ``tz`` (every kind at every wall time, or with ``sample``
    one kind per wall time, in turn); in a new couple of that zone unless given one."""
    cid = couple_id or couple_with_partners(db, now, name=f"Check {tz}", tz=tz)
    days = unclear_walls(tz) or [(date(2027, 3, 28), [time(2, 30), time(2, 0)], "none")]
    i = 0
    for day, walls, what in days:
        for wall in walls:
            for kind in (KINDS[i % len(KINDS)],) if sample else KINDS:
                _add(db, now, cid, tz, kind, wall, day, what)
            i += 1
    last = None
    for kind in KINDS[:1] if sample else KINDS:
        rid = _add(db, now, cid, tz, kind, time(21, 0), days[0][0], days[0][2])
        last = last or rid
    assert last is not None
    _skip_and_move(db, now, last, days)  # the daily 21:00 one
    return cid


def _add(
    db: Database, now: datetime, cid: int, tz: str, kind: Kind, wall: time, day: date, what: str
) -> int:
    rule = kind.rule.format(day=day.day, wd=_WD[day.weekday()], month=day.month)
    return add_ritual(
        db,
        now,
        cid,
        kind="custom",
        title=f"{kind.name} {wall:%H:%M} {what} {tz}",
        at=f"{wall:%H:%M}",
        rrule=rule,
        duration=kind.duration,
        remind=kind.remind,
        on="2026-01-06",
        timezone=tz,
    )


def windows_near(zones: Sequence[str], years: Sequence[int] = (2026, 2027, 2045)) -> Windows:
    """Windows from eight days before to two days after each change in ``zones``: where
    every disagreement this check has found lived (the sampled run reads only these)."""
    spans = []
    for tz in zones:
        mine = []
        for year in years:
            lo, hi = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
            for t in transitions(tz, lo, hi):
                if t.after != t.before:
                    mine.append((t.at - timedelta(days=8), t.at + timedelta(days=2)))
        # No change in these years: the days around the fallback day of build() in each.
        mine = mine or [
            (datetime(y, 3, 20, tzinfo=UTC), datetime(y, 3, 30, tzinfo=UTC)) for y in years
        ]
        spans += mine
    merged: list[tuple[datetime, datetime]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _skip_and_move(
    db: Database, now: datetime, rid: int, days: list[tuple[date, list[time], str]]
) -> None:
    """Skip the occurrence on the first unclear day, move the one before it into its gap or
    fold (the time inside it), and move one in 2045 onto the same wall time."""
    with db.session() as s:
        r = s.get(Ritual, rid)
        assert r is not None
        tz = ZoneInfo(r.timezone)
        day, walls, _ = days[0]
        on = {
            o.start.astimezone(tz).date(): o
            for o in rituals.upcoming(
                r, datetime.combine(day - timedelta(days=2), time(0), tzinfo=tz), 3
            )
        }
        skips.skip(s, now, r, on[day].original_start)
        skips.move(
            s, now, r, on[day - timedelta(days=1)].original_start, datetime.combine(day, walls[1])
        )
        later = rituals.upcoming(r, datetime(2045, 6, 1, tzinfo=UTC), 1)[0]
        target = datetime.combine(later.start.astimezone(tz).date() + timedelta(days=1), walls[1])
        skips.move(s, now, r, later.original_start, target)


def _windowed(seen: Seen, windows: Windows) -> Seen:
    return {
        uid: sorted(o for o in occ if any(lo <= o[0] < hi for lo, hi in windows))
        for uid, occ in seen.items()
    }


def planned(
    db: Database, couple_id: int, windows: Windows = WINDOWS, stale_minutes: float = 30
) -> Seen:
    """What the planner sends Alice by SMS, and when each occurrence starts and ends."""
    due: dict[tuple[int, datetime], set[datetime]] = defaultdict(set)
    with db.engine.connect() as conn:
        loaded, partners, pauses = planner._load(conn, [couple_id], windows[0][0])
    for lo, hi in windows:
        now = lo - timedelta(days=9)
        for row in planner.wanted_rows(loaded, partners, pauses, now, hi - now, stale_minutes):
            if row[3] == "sms":  # Alice's; the same instants go to every partner and channel
                due[(row[1], row[6])].add(row[7])
    out: Seen = {}
    with db.session() as s:
        for r in s.scalars(sa.select(Ritual).where(Ritual.couple_id == couple_id)):
            found = [o for lo, hi in windows for o in occurrences(schedule_of(r), lo, hi)]
            out[r.uid] = [
                (o.start, o.end, tuple(sorted(due[(r.id, o.original_start)]))) for o in found
            ]
    return _windowed(out, windows)


def recurring_ical_events_reading(body: bytes, windows: Windows = WINDOWS) -> Seen:
    cal = Calendar.from_ical(body)
    alarms: dict[tuple[str, datetime], set[datetime]] = defaultdict(set)  # windows overlap
    out: Seen = defaultdict(list)
    events, triggers = (
        recurring_ical_events.of(cal),
        recurring_ical_events.of(cal, components=["VALARM"]),
    )
    for lo, hi in windows:
        for ev in events.between(lo, hi):
            out[str(ev["UID"])].append((ev.start.astimezone(UTC), ev.end.astimezone(UTC), ()))
        for ev in triggers.between(lo - timedelta(days=8), hi + timedelta(days=8)):
            for alarm in ev.walk("VALARM"):
                key = (str(ev["UID"]), ev.start.astimezone(UTC))
                alarms[key].add(alarm["TRIGGER"].dt.astimezone(UTC))
    return _windowed(
        {
            uid: [(a, b, tuple(sorted(alarms[(uid, a)]))) for a, b, _ in occ]
            for uid, occ in out.items()
        },
        windows,
    )


def icaljs_reading(body: bytes, tmp: Path, windows: Windows = WINDOWS) -> Seen:
    ics = tmp / "feed.ics"
    ics.write_bytes(body)
    spans = json.dumps([[lo.isoformat(), hi.isoformat()] for lo, hi in windows])
    run = subprocess.run(
        ["node", str(JS), str(ics), spans], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    parse = datetime.fromisoformat
    return _windowed(
        {
            uid: [(parse(a), parse(b), tuple(parse(x) for x in al)) for a, b, al in occ]
            for uid, occ in json.loads(run.stdout).items()
        },
        windows,
    )


def ical_reading(body: bytes, windows: Windows = WINDOWS) -> Seen:
    cal = IcsCalendarStream.calendar_from_ics(body.decode())
    out: Seen = defaultdict(list)
    # One pass over the timeline (it is walked from its start on every query).
    for ev in cal.timeline_tz(UTC).overlapping(windows[0][0], windows[-1][1]):
        start, end = ev.start, ev.end
        assert isinstance(start, datetime) and isinstance(end, datetime)
        if not any(lo <= start < hi for lo, hi in windows):
            continue
        dues = []
        for alarm in ev.alarm:
            trigger = alarm.trigger
            due = trigger if isinstance(trigger, datetime) else start + trigger
            dues.append(due.astimezone(UTC))
        assert ev.uid is not None
        out[ev.uid].append((start.astimezone(UTC), end.astimezone(UTC), tuple(sorted(dues))))
    return _windowed(dict(out), windows)


def differences(want: Seen, got: Seen, limit: int = 8) -> list[str]:
    """Readable lines for each occurrence a reader sees otherwise (empty: they agree)."""
    lines = []
    for uid in sorted(set(want) | set(got)):
        a, b = set(want.get(uid, ())), set(got.get(uid, ()))
        lines += [f"{uid}: planner only {x}" for x in sorted(a - b)[:limit]]
        lines += [f"{uid}: reader only  {x}" for x in sorted(b - a)[:limit]]
    return lines
