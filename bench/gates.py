"""CPU per send of the send-time gates, now that the first send is checked against the
current schedule too (issue 25, item 6), in one process, one thread, no database.

A daily ritual begun two years ago, its row through ``gates.check``:
- planned well after the ritual's last edit (almost every row): the cheap path, the
  baseline the other figures are given against;
- planned around an edit (the few rows a replan retimes): the rule is expanded;
- the schedule check alone on the cheap path: what the first-send check adds to the
  baseline (before the change, a first send ran no schedule check at all).
CPU time (``time.process_time``); the kinds take turns in rounds so drift weighs on all.

    python -m bench.gates [--checks 2000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as wall

from service.db.models import (
    Channel,
    ConsentState,
    Couple,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
    Ritual,
    RitualKind,
)
from service.outbox import gates

NOW = datetime(2026, 12, 7, 19, 55, tzinfo=UTC)
OCCURRENCE = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)  # 21:00 in Berlin


def _ritual(edited: datetime) -> tuple[Ritual, Partner]:
    couple = Couple(name="A & B", timezone="Europe/Berlin", paused_at=None, paused_until=None)
    partner = Partner(
        couple=couple,
        name="A",
        phone="+4915123456789",
        channels="sms",
        sms_consent=ConsentState.CONSENTED,
        timezone="Europe/Berlin",
        quiet_start=None,
        quiet_end=None,
    )
    ritual = Ritual(
        couple=couple,
        kind=RitualKind.CHECK_IN,
        dtstart_date=date(2024, 12, 1),
        start_time=wall(21, 0),
        duration_minutes=5,
        rrule="FREQ=DAILY",
        timezone="Europe/Berlin",
        reminder_offsets="0",
        channels="",
        ended_at=None,
        updated_at=edited,
    )
    return ritual, partner


def _row(created: datetime, attempts: int = 1) -> Reminder:
    return Reminder(
        channel=Channel.SMS,
        purpose=ReminderPurpose.NUDGE,
        offset_minutes=0,
        occurrence_start=OCCURRENCE,
        expires_at=OCCURRENCE + timedelta(minutes=30),
        state=ReminderState.SENDING,
        attempts=attempts,
        created_at=created,
    )


def _time(n: int, fn: object) -> float:
    assert callable(fn)
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6  # microseconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    ritual, partner = _ritual(edited=NOW - timedelta(days=30))
    planned_later, planned_around = _row(NOW - timedelta(days=1)), _row(ritual.updated_at)
    never = lambda _r: False  # noqa: E731 - a chase's "answered" is not asked for a nudge
    kinds = {
        "planned after the last edit (cheap path)": lambda: gates.check(
            planned_later, partner, ritual, NOW, never
        ),
        "planned around an edit (rule expanded)": lambda: gates.check(
            planned_around, partner, ritual, NOW, never
        ),
        "schedule check alone, cheap path": lambda: gates.still_in_schedule(planned_later, ritual),
    }
    assert all(fn() in (None, True) for fn in kinds.values())
    totals = dict.fromkeys(kinds, 0.0)
    for _ in range(args.rounds):
        for name, fn in kinds.items():
            totals[name] += _time(args.checks, fn) / args.rounds
    base = totals["planned after the last edit (cheap path)"]
    for name, us in totals.items():
        print(f"{name:45s} {us:9.1f} us per row  ({us / base:.2f}x the cheap path)")


if __name__ == "__main__":
    main()
