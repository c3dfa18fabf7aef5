"""Local wall time -> UTC (DST rules of DESIGN.md) and quiet hours in a partner's own zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from service.core.timeutil import (
    before_quiet_hours,
    exists,
    in_quiet_hours,
    localize,
    quiet_hours_end,
    zone,
)


@pytest.mark.parametrize(
    ("tz", "day", "at", "expected_utc"),
    [
        # Spring forward: the nonexistent time moves forward by the gap.
        ("Europe/Berlin", date(2026, 3, 29), time(2, 30), datetime(2026, 3, 29, 1, 30)),
        ("America/New_York", date(2026, 3, 8), time(2, 30), datetime(2026, 3, 8, 7, 30)),
        # Lord Howe's gap is 30 minutes.
        ("Australia/Lord_Howe", date(2026, 10, 4), time(2, 15), datetime(2026, 10, 3, 15, 45)),
        # Chatham moves at 02:45 local.
        ("Pacific/Chatham", date(2026, 9, 27), time(3, 0), datetime(2026, 9, 26, 14, 15)),
        # Fall back: an ambiguous time takes the first instant (still summer time).
        ("Europe/Berlin", date(2026, 10, 25), time(2, 30), datetime(2026, 10, 25, 0, 30)),
        ("America/New_York", date(2026, 11, 1), time(1, 30), datetime(2026, 11, 1, 5, 30)),
        ("Australia/Lord_Howe", date(2026, 4, 5), time(1, 45), datetime(2026, 4, 4, 14, 45)),
        # No DST at all, odd offsets.
        ("Asia/Kathmandu", date(2026, 6, 1), time(21, 0), datetime(2026, 6, 1, 15, 15)),
        ("America/St_Johns", date(2026, 1, 15), time(21, 0), datetime(2026, 1, 16, 0, 30)),
    ],
)
def test_localize(tz: str, day: date, at: time, expected_utc: datetime) -> None:
    assert localize(day, at, zone(tz)) == expected_utc.replace(tzinfo=UTC)


def test_exists() -> None:
    berlin = zone("Europe/Berlin")
    assert not exists(date(2026, 3, 29), time(2, 30), berlin)
    assert exists(date(2026, 3, 29), time(3, 0), berlin)
    assert exists(date(2026, 10, 25), time(2, 30), berlin)


def test_quiet_hours_wrapping_midnight() -> None:
    ny = zone("America/New_York")
    start, end = time(22, 0), time(7, 30)
    at = datetime(2026, 1, 6, 4, 0, tzinfo=UTC)  # 23:00 in New York
    assert in_quiet_hours(at, ny, start, end)
    assert quiet_hours_end(at, ny, start, end) == datetime(2026, 1, 6, 12, 30, tzinfo=UTC)
    morning = datetime(2026, 1, 6, 12, 30, tzinfo=UTC)  # 07:30 exactly: quiet hours are over
    assert not in_quiet_hours(morning, ny, start, end)
    assert quiet_hours_end(morning, ny, start, end) == morning


def test_quiet_hours_within_a_day_and_off() -> None:
    berlin = zone("Europe/Berlin")
    at = datetime(2026, 1, 6, 12, 0, tzinfo=UTC)  # 13:00 in Berlin
    assert in_quiet_hours(at, berlin, time(12, 0), time(14, 0))
    assert quiet_hours_end(at, berlin, time(12, 0), time(14, 0)) == datetime(
        2026, 1, 6, 13, 0, tzinfo=UTC
    )
    assert not in_quiet_hours(at, berlin, None, None)


def test_quiet_hours_end_on_a_dst_night() -> None:
    # Quiet 22:00-07:00 across the spring-forward night: the end is 07:00 summer time.
    berlin = zone("Europe/Berlin")
    at = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 00:00 CET on the 29th
    assert quiet_hours_end(at, berlin, time(22, 0), time(7, 0)) == datetime(
        2026, 3, 29, 5, 0, tzinfo=UTC
    )


def test_quiet_hours_ending_inside_the_repeated_hour() -> None:
    # Quiet 23:00-02:30. On 25 Oct 2026 Berlin falls back at 03:00 CEST to 02:00 CET: 02:15
    # comes twice. From the second 02:15 (00:15 UTC) the end is the second 02:30 (01:30 UTC).
    berlin = zone("Europe/Berlin")
    second = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)  # 02:15 CET, the repeated hour
    assert quiet_hours_end(second, berlin, time(23, 0), time(2, 30)) == datetime(
        2026, 10, 25, 1, 30, tzinfo=UTC
    )
    first = datetime(2026, 10, 25, 0, 15, tzinfo=UTC)  # 02:15 CEST, the first time round
    assert quiet_hours_end(first, berlin, time(23, 0), time(2, 30)) == datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC
    )


def test_quiet_hours_ending_in_the_spring_gap() -> None:
    # Quiet 22:00-02:30; 02:30 does not exist on 29 Mar 2026 in Berlin: the end is 03:30 CEST.
    berlin = zone("Europe/Berlin")
    at = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 00:00 CET
    assert quiet_hours_end(at, berlin, time(22, 0), time(2, 30)) == datetime(
        2026, 3, 29, 1, 30, tzinfo=UTC
    )


EARLY_ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "America/St_Johns",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Sydney",
    "Pacific/Chatham",
    "UTC",
]
QUIET = (time(22, 30), time(7, 0))


@pytest.mark.parametrize("tz", EARLY_ZONES)
@pytest.mark.parametrize("day", [date(2026, 1, 14), date(2026, 7, 15)])  # both seasons
def test_early_is_never_more_than_quiet_early_hours(tz: str, day: date) -> None:
    """Issue 25, item 11: 22:29 is 3 h 01 min before 01:30, one minute more than three
    hours, so a nudge due exactly 3 h into the quiet hours waits for their end."""
    z = zone(tz)
    next_day = date.fromordinal(day.toordinal() + 1)
    three = timedelta(hours=3)
    moved = before_quiet_hours(localize(next_day, time(1, 29), z), z, *QUIET, three)
    assert moved == localize(day, time(22, 29), z)  # exactly 3 h early: allowed
    assert before_quiet_hours(localize(next_day, time(1, 30), z), z, *QUIET, three) is None
    # quiet_early_hours = 0 means never early, even for a nudge due as the quiet hours begin.
    at_start = localize(day, time(22, 30), z)
    assert before_quiet_hours(at_start, z, *QUIET, timedelta(0)) is None
    assert before_quiet_hours(at_start, z, *QUIET, timedelta(minutes=1)) == at_start - timedelta(
        minutes=1
    )
