"""The whole calendar cross-check matrix (tests/interop.py): 13 zones, every 2027 gap and
fold, daily/weekly/monthly/yearly rituals at and around them, skips and moves, whole-day
offsets, 2026-2027 and 2045. Prints, per zone, the occurrences and reminders compared, the
seconds each reader took, and every disagreement with the planner (goal: none). The sampled
version runs in ``make test`` (tests/test_feeds.py::test_three_readers_agree_with_the_planner).

    python -m bench.feed_interop [--zone Europe/Berlin ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from bench.common import database
from service.calendar import feeds
from service.db.models import Couple, Ritual
from tests import interop

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zone", action="append", help="Only this zone (repeatable).")
    args = ap.parse_args()
    zones = args.zone or list(interop.ZONES)
    bad = 0
    with database("sqlite") as db, tempfile.TemporaryDirectory() as tmp:
        for tz in zones:
            cid = interop.build(db, NOW, tz)
            t0 = time.perf_counter()
            want = interop.planned(db, cid)
            with db.session() as s:
                couple = s.get(Couple, cid)
                assert couple is not None
                rs = list(s.scalars(sa.select(Ritual).where(Ritual.couple_id == cid)))
                body = feeds.build_calendar(couple, rs, now=NOW, alarms=True)
            t1 = time.perf_counter()
            readings = {
                "recurring-ical-events": lambda b: interop.recurring_ical_events_reading(b),
                "ical.js": lambda b: interop.icaljs_reading(b, Path(tmp)),
                "ical": lambda b: interop.ical_reading(b),
            }
            occ = sum(map(len, want.values()))
            reminders = sum(len(o[2]) for v in want.values() for o in v)
            figures = [
                f"{tz}: {len(want)} rituals, {occ} occurrences, {reminders} reminders, "
                f"feed {len(body) // 1024} KiB, plan+build {t1 - t0:.1f}s"
            ]
            for name, read in readings.items():
                t = time.perf_counter()
                got = read(body)
                diff = interop.differences(want, got)
                figures.append(f"  {name}: {time.perf_counter() - t:.1f}s, {len(diff)} differences")
                figures += [f"    {line}" for line in diff[:20]]
                bad += len(diff)
            print("\n".join(figures), flush=True)
    print(f"total differences: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
