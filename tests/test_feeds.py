"""The iCalendar feed: content to the letter of RFC 5545, served over real HTTP, and expanded
by three independent readers (recurring-ical-events, Mozilla's ical.js and ``ical``; see
tests/interop.py) to exactly the instants the planner sends reminders for: start, end and
every reminder of every occurrence."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import httpx
import pytest
import recurring_ical_events
import sqlalchemy as sa
from icalendar import Calendar, Component, vCategory, vDDDTypes, vInt, vUTCOffset
from prometheus_client.parser import text_string_to_metric_families

from service.calendar import feed_tokens, feeds
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Couple, Reminder, Ritual, RitualKind
from service.domain import couples, partners, rituals, skips
from service.domain.recurrence import occurrences, schedule_of
from service.outbox import planner
from tests import interop
from tests.conftest import IN_CI, Cli
from tests.factories import add_ritual, couple_with_partners
from tests.web import serve

JS = Path(__file__).parent / "js"
START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)
ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "America/St_Johns",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
)

V = TypeVar("V")


def _prop(component: Component, name: str, kind: type[V]) -> V:
    """``component[name]``, checked to be of the icalendar value type ``kind``."""
    value = component[name]
    assert isinstance(value, kind), f"{name} is a {type(value).__name__}, not a {kind.__name__}"
    return value


def _feed(db: Database, couple_id: int, now: datetime, alarms: bool = False) -> bytes:
    with db.session() as s:
        c = s.get(Couple, couple_id)
        assert c is not None
        rs = list(s.scalars(sa.select(Ritual).where(Ritual.couple_id == c.id)))
        return feeds.build_calendar(c, rs, now=now, alarms=alarms)


def test_calendar_properties_and_rfc5545_form(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    rid = add_ritual(db, now, cid, "five-minute-check-in")
    add_ritual(db, now, cid, "anniversary", on="2019-06-14")
    with db.session() as s:
        r = s.get(Ritual, rid)
        assert r is not None
        skips.skip(s, now, r, datetime(2026, 1, 7, 20, tzinfo=UTC))
        skips.move(s, now, r, datetime(2026, 1, 8, 20, tzinfo=UTC), datetime(2026, 1, 8, 22, 15))
    body = _feed(db, cid, now, alarms=True)
    lines = body.split(b"\r\n")
    assert body.endswith(b"\r\n") and b"\n" not in body.replace(b"\r\n", b"")
    assert max(len(line) for line in lines) <= 75
    text = body.decode()
    assert "REFRESH-INTERVAL;VALUE=DURATION:PT6H\r\n" in text
    assert "X-PUBLISHED-TTL:PT6H\r\n" in text
    assert "EXDATE;TZID=Europe/Berlin:20260107T210000\r\n" in text
    assert "RECURRENCE-ID;TZID=Europe/Berlin:20260108T210000\r\n" in text
    assert "DTSTART;TZID=Europe/Berlin:20260108T221500\r\n" in text
    assert "DTSTART;VALUE=DATE:20190614\r\n" in text  # the anniversary is all-day

    cal = Calendar.from_ical(body)
    assert str(cal["X-WR-CALNAME"]) == "Alice & Sam — rituals" == str(cal["NAME"])
    assert str(cal["METHOD"]) == "PUBLISH" and str(cal["PRODID"]) == feeds.PRODID
    assert [str(tz["TZID"]) for tz in cal.walk("VTIMEZONE")] == ["Europe/Berlin"]
    master = next(e for e in cal.walk("VEVENT") if "RRULE" in e and "RECURRENCE-ID" not in e)
    assert int(_prop(master, "SEQUENCE", vInt)) == 3  # created, skipped, moved
    assert str(_prop(master, "CATEGORIES", vCategory).cats[0]) == "check_in"
    assert _prop(master, "DURATION", vDDDTypes).dt == timedelta(minutes=5)
    triggers = [_prop(a, "TRIGGER", vDDDTypes).to_ical().decode() for a in master.walk("VALARM")]
    assert triggers == ["P0D"]


def test_the_feed_is_deterministic_and_until_is_utc(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    rid = add_ritual(db, now, cid, "five-minute-check-in")
    first = _feed(db, cid, now)
    # Days apart, not hours: the build only sees the day, so hours apart would agree even if
    # DTSTAMP were "now".
    assert _feed(db, cid, now + timedelta(days=40)) == first
    with db.session() as s:
        r = s.get(Ritual, rid)
        assert r is not None
        changed = r.updated_at.astimezone(UTC)
    assert f"DTSTAMP:{changed:%Y%m%dT%H%M%S}Z\r\n".encode() in first  # the ritual's last change
    clock.advance(timedelta(days=3))
    with db.session() as s:
        r = s.get(Ritual, rid)
        assert r is not None
        rituals.remove(s, clock.now(), r)
    text = _feed(db, cid, clock.now()).decode()
    assert re.search(r"RRULE:FREQ=DAILY;UNTIL=20260108T120000Z\r\n", text), text
    cal = Calendar.from_ical(text)
    starts = [e.start for e in recurring_ical_events.of(cal).between(START, END)]
    assert len(starts) == 3  # 5, 6 and 7 January stay in partners' calendars


def test_pauses_show_as_skipped(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "five-minute-check-in")
    with db.session() as s:
        c = s.get(Couple, cid)
        assert c is not None
        couples.pause(s, now, c, now + timedelta(days=2))
    cal = Calendar.from_ical(_feed(db, cid, now))
    days = {
        e.start.date() for e in recurring_ical_events.of(cal).between(now, now + timedelta(days=4))
    }
    assert days == {date(2026, 1, 7), date(2026, 1, 8)}


@pytest.mark.parametrize("level", ["couple", "ritual"])
def test_a_pause_that_ended_stays_skipped(db: Database, clock: FakeClock, level: str) -> None:
    """Resuming (or pausing again) must not bring back what the pause kept out."""
    now = clock.now()  # Monday 5 Jan, 12:00 UTC; the check-in is at 21:00 Berlin
    cid = couple_with_partners(db, now)
    rid = add_ritual(db, now, cid, "five-minute-check-in")

    def toggle(at: datetime, on: bool, until: datetime | None = None) -> None:
        with db.session() as s:
            c, r = s.get(Couple, cid), s.get(Ritual, rid)
            assert c is not None and r is not None
            if level == "couple":
                couples.pause(s, at, c, until) if on else couples.resume(s, at, c)
            else:
                rituals.pause(s, at, r, until) if on else rituals.resume(s, at, r)

    toggle(now, True)
    toggle(now + timedelta(days=3), False)  # 5, 6, 7 Jan were paused
    toggle(now + timedelta(days=4), True, until=now + timedelta(days=5))  # 9 Jan
    toggle(now + timedelta(days=7), True)  # that pause ran out; from 12 Jan paused again
    later = now + timedelta(days=8)
    cal = Calendar.from_ical(_feed(db, cid, later))
    days = {e.start.day for e in recurring_ical_events.of(cal).between(now, later)}
    assert days == {8, 10, 11}


def _served(hearth: Hearth, query: str = "") -> bytes:
    """The feed as a subscriber gets it: a token issued to Alice, fetched over real HTTP."""
    with hearth.db.session() as s:
        token = feed_tokens.issue(s, hearth.clock.now(), partners.resolve(s, "Alice"))
    with serve(hearth) as base:
        r = httpx.get(f"{base}/feeds/{token}.ics{query}", timeout=10)
    assert r.status_code == 200, r.text
    return r.content


def test_a_ritual_removed_during_a_couple_pause_keeps_its_paused_days_out(
    db: Database, clock: FakeClock
) -> None:
    now = clock.now()  # Monday 5 Jan, 12:00 UTC; the check-in is at 21:00 Berlin
    cid = couple_with_partners(db, now)
    rid = add_ritual(db, now, cid, "five-minute-check-in")
    with db.session() as s:
        couples.pause(s, now, couples.resolve(s, cid), None)
    with db.session() as s:
        r = s.get(Ritual, rid)
        assert r is not None
        rituals.remove(s, now + timedelta(days=2), r)  # 5 and 6 Jan were paused
    with db.session() as s:
        couples.resume(s, now + timedelta(days=3), couples.resolve(s, cid))
    cal = Calendar.from_ical(_feed(db, cid, now + timedelta(days=4)))
    assert list(recurring_ical_events.of(cal).between(now, now + timedelta(days=4))) == []


def _interop_couple(
    db: Database, clock: FakeClock, tz: str, on: str | None = None
) -> tuple[int, list[int]]:
    now = clock.now()
    cid = couple_with_partners(db, now, name=f"Interop {tz}", tz=tz)
    since = {"on": on} if on else {}
    ids = [
        add_ritual(db, now, cid, kind="custom", title=f"At {at}", at=at, every="daily", **since)
        for at in ("02:30", "21:00", "01:45")
    ]
    ids.append(
        add_ritual(
            db, now, cid, kind="custom", title="Weekly", at="19:15", every="weekly:SU", **since
        )
    )
    with db.session() as s:
        for rid in ids:
            r = s.get(Ritual, rid)
            assert r is not None
            first, second = rituals.upcoming(r, datetime(2026, 6, 1, tzinfo=UTC), 2)
            skips.skip(s, now, r, first.original_start)
            later = second.start.astimezone(ZoneInfo(tz)).replace(tzinfo=None) + timedelta(hours=1)
            skips.move(s, now, r, second.original_start, later)
    return cid, ids


def _expected(db: Database, ids: list[int]) -> dict[str, list[datetime]]:
    out = {}
    with db.session() as s:
        for rid in ids:
            r = s.get(Ritual, rid)
            assert r is not None
            out[r.uid] = [o.start for o in occurrences(schedule_of(r), START, END)]
    return out


@pytest.mark.parametrize("tz", ZONES)
def test_recurring_ical_events_expands_exactly_what_hearth_plans(
    sqlite_hearth: Hearth, clock: FakeClock, tz: str
) -> None:
    _, ids = _interop_couple(sqlite_hearth.db, clock, tz)
    expected = _expected(sqlite_hearth.db, ids)
    cal = Calendar.from_ical(_served(sqlite_hearth))
    got: dict[str, list[datetime]] = {uid: [] for uid in expected}
    for ev in recurring_ical_events.of(cal).between(START, END):
        got[str(ev["UID"])].append(ev.start.astimezone(UTC))
    for uid, want in expected.items():
        assert sorted(got[uid]) == want, uid
    assert sum(map(len, expected.values())) > 2000


@pytest.fixture(scope="session")
def icaljs() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        if IN_CI:
            pytest.fail("CI=true requires node and npm for the ical.js interop test")
        pytest.skip("node/npm not on PATH: ical.js interop not checked")
    if not (JS / "node_modules" / "ical.js").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS,
            check=True,
            env={**os.environ, "npm_config_update_notifier": "false"},
        )
    return JS / "expand.mjs"


def _icaljs(icaljs: Path, body: bytes, tmp_path: Path) -> dict[str, list[datetime]]:
    ics = tmp_path / "feed.ics"
    ics.write_bytes(body)
    out = subprocess.run(
        ["node", str(icaljs), str(ics), START.isoformat(), END.isoformat()],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return {
        uid: sorted(datetime.fromisoformat(t) for t in ts)
        for uid, ts in json.loads(out.stdout).items()
    }


@pytest.mark.node
@pytest.mark.parametrize("tz", ZONES)
def test_icaljs_expands_exactly_what_hearth_plans(
    sqlite_hearth: Hearth, clock: FakeClock, tz: str, icaljs: Path, tmp_path: Path
) -> None:
    _, ids = _interop_couple(sqlite_hearth.db, clock, tz)
    expected = _expected(sqlite_hearth.db, ids)
    # No deviation left to pin: ical.js reads a skipped or repeated wall time differently
    # from RFC 5545 (see test_unclear_wall_times_are_pinned), and the feed pins those.
    assert _icaljs(icaljs, _served(sqlite_hearth), tmp_path) == expected


@pytest.mark.node
def test_icaljs_places_a_series_started_long_ago_in_this_years_summer(
    sqlite_hearth: Hearth, clock: FakeClock, icaljs: Path, tmp_path: Path
) -> None:
    """Rituals kept since 2005: the VTIMEZONEs must reach past today, not just 15 years past
    the newest DTSTART (2020), or ical.js keeps the last listed offset and shows 2026's
    summer-time occurrences an hour off. Two zones in one feed (New York's rules changed in
    2007), with wall times a DST change skips or repeats, whose pins must reach as far."""
    db, now = sqlite_hearth.db, clock.now()
    cid = couple_with_partners(db, now)
    walls = (("02:30", "Europe/Berlin"), ("21:00", "Europe/Berlin"), ("01:30", "America/New_York"))
    ids = [
        add_ritual(
            db,
            now,
            cid,
            kind="custom",
            title=f"{at} {tz}",
            at=at,
            every="daily",
            on="2005-03-01",
            timezone=tz,
        )
        for at, tz in walls
    ]
    expected = _expected(db, ids)
    assert _icaljs(icaljs, _served(sqlite_hearth), tmp_path) == expected


def test_unclear_wall_times_are_pinned(db: Database, clock: FakeClock) -> None:
    """A 02:30 ritual in Berlin: on 29 March 2026 02:30 does not exist (Hearth reminds at
    03:30 CEST), on 25 October it happens twice (Hearth takes the first, 00:30 UTC). The
    feed pins both with an override, so a client's own reading of the rule cannot move them."""
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, kind="custom", title="Late", at="02:30", every="daily")
    text = _feed(db, cid, now).decode()
    overrides = {
        re.search(r"RECURRENCE-ID;(\S+)", block)[1]: re.search(r"\r\nDTSTART(\S+)", block)[1]  # type: ignore[index]
        for block in text.split("BEGIN:VEVENT")
        if "RECURRENCE-ID" in block
    }
    assert overrides["TZID=Europe/Berlin:20260329T023000"] == ";TZID=Europe/Berlin:20260329T033000"
    assert overrides["TZID=Europe/Berlin:20261025T023000"] == ":20261025T003000Z"
    assert len(overrides) == 2 * 21  # both changes of 2026..2046, nothing else
    # The end in the start's zone, and as DTEND: a DURATION would be added on a wall clock.
    assert "DTEND;TZID=Europe/Berlin:20260329T033500\r\n" in text  # five minutes
    assert "DTEND:20261025T003500Z\r\n" in text
    cal = Calendar.from_ical(text)
    vtz = next(iter(cal.walk("VTIMEZONE")))
    # The onset of summer time is 02:00 in the offset before it (RFC 5545 3.6.5).
    onsets = {}
    for o in vtz.subcomponents:
        onset = (str(o["TZNAME"]), _prop(o, "DTSTART", vDDDTypes).dt)
        onsets[onset] = _prop(o, "TZOFFSETFROM", vUTCOffset).td
    assert onsets[("CEST", datetime(2026, 3, 29, 2, 0))] == timedelta(hours=1)
    assert onsets[("CET", datetime(2026, 10, 25, 3, 0))] == timedelta(hours=2)


def test_served_feed_etag_304_head_and_404(db: Database, clock: FakeClock, hearth: Hearth) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "five-minute-check-in")
    with db.session() as s:
        token = feed_tokens.issue(s, now, partners.resolve(s, "Alice"))
        other = feed_tokens.issue(s, now, partners.resolve(s, "Sam"))
    with serve(hearth) as base, httpx.Client(base_url=base) as http:
        r = http.get(f"/feeds/{token}.ics")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/calendar; charset=utf-8"
        assert r.headers["cache-control"].startswith("private, max-age=")
        etag = r.headers["etag"]
        assert etag.startswith('"') and r.content and "last-modified" in r.headers
        assert http.get(f"/feeds/{other}.ics").content == r.content  # the couple's one feed
        head = http.head(f"/feeds/{token}.ics")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(r.content))
        assert http.get(f"/feeds/{token}.ics", headers={"If-None-Match": etag}).status_code == 304
        since = {"If-Modified-Since": r.headers["last-modified"]}
        assert http.get(f"/feeds/{token}.ics", headers=since).status_code == 304
        with db.session() as s:
            rituals.add(s, clock.now(), couples.resolve(s, cid), rituals.RitualSpec(), "date-night")
        changed = http.get(f"/feeds/{token}.ics", headers={"If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        # Rotation: the old URL stops working at once; the other partner's keeps working.
        with db.session() as s:
            feed_tokens.issue(s, clock.now(), partners.resolve(s, "Alice"))
        gone = http.get(f"/feeds/{token}.ics")
        never = http.get("/feeds/" + "A" * 43 + ".ics")
        junk = http.get("/feeds/not-a-token.ics")
        assert gone.status_code == never.status_code == junk.status_code == 404
        assert gone.content == never.content == junk.content
        assert http.get(f"/feeds/{other}.ics").status_code == 200


def test_a_removed_couples_calendar_is_never_served_to_the_next(
    db: Database, clock: FakeClock, hearth: Hearth
) -> None:
    """SQLite gives a removed couple's id to the next couple, whose change stamp starts over:
    the feed cache must not take the new couple for the old one."""
    now = clock.now()
    old = couple_with_partners(db, now, name="Old & Gone")
    add_ritual(db, now, old, kind="custom", title="Secret ritual", at="20:00", every="daily")
    with db.session() as s:
        token = feed_tokens.issue(s, now, partners.resolve(s, "Alice"))
    with serve(hearth) as base, httpx.Client(base_url=base) as http:
        assert "Secret ritual" in http.get(f"/feeds/{token}.ics").text
        with db.session() as s:
            gone = couples.resolve(s, old)
            stamp = gone.change_stamp
            couples.remove(s, clock.now(), gone)
        later = clock.advance(timedelta(minutes=5))
        new = couple_with_partners(db, later, name="New & Here")
        assert new == old or not db.is_sqlite  # the id is reused
        with db.session() as s:
            c = couples.resolve(s, new)
            token = feed_tokens.issue(s, later, partners.resolve(s, "Alice", c))
            c.change_stamp = stamp  # as many edits as the old couple had
        served = http.get(f"/feeds/{token}.ics").text
    assert "New & Here" in served and "Secret ritual" not in served


def test_tokens_are_stored_only_as_hashes(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    couple_with_partners(db, now)
    with db.session() as s:
        token = feed_tokens.issue(s, now, partners.resolve(s, "Alice"))
    assert len(token) == 43  # 256 bits, URL-safe base64
    with db.engine.connect() as conn:
        dump = " ".join(
            str(v)
            for table in ("partner", "event")
            for row in conn.execute(sa.text(f"SELECT * FROM {table}"))
            for v in row
        )
    assert token not in dump and feed_tokens.digest(token) in dump


def test_moved_one_off_and_a_last_instance_moved_past_until_show_where_nudges_go(
    sqlite_db: Database, clock: FakeClock
) -> None:
    """Both parsers and the planner agree on the moves the review found drifting: a
    rescheduled repair talk (a one-off), and the last instance of an UNTIL-bounded series
    moved later than UNTIL (RFC 5545 allows an override to start after it)."""
    db, now = sqlite_db, clock.now()  # the couple and its local times are Berlin's
    cid = couple_with_partners(db, now)
    series = add_ritual(
        db,
        now,
        cid,
        kind="custom",
        title="Five evenings",
        at="21:00",
        rrule="FREQ=DAILY;UNTIL=20260206T200000Z",
        on="2026-02-02",
    )
    with db.session() as s:
        couple = s.get(Couple, cid)
        assert couple is not None
        talk = rituals.add_one_off(
            s,
            now,
            couple,
            kind=RitualKind.REPAIR,
            title="Repair talk",
            description="",
            start=datetime(2026, 2, 7, 18, 0, tzinfo=UTC),
            duration_minutes=45,
            offsets=[0],
        )
        skips.move(
            s, now, talk, datetime(2026, 2, 7, 18, 0, tzinfo=UTC), datetime(2026, 2, 8, 20, 30)
        )
        r = s.get(Ritual, series)
        assert r is not None
        last = rituals.upcoming(r, now, 10)[-1].original_start
        assert last == datetime(2026, 2, 6, 20, 0, tzinfo=UTC)
        skips.move(s, now, r, last, datetime(2026, 2, 7, 22, 0))
        talk_uid, series_uid = talk.uid, r.uid
    expected = _expected(db, [series, talk.id])
    assert expected[talk_uid] == [datetime(2026, 2, 8, 19, 30, tzinfo=UTC)]
    assert expected[series_uid][-1] == datetime(2026, 2, 7, 21, 0, tzinfo=UTC)
    cal = Calendar.from_ical(_feed(db, cid, now))
    got: dict[str, list[datetime]] = {uid: [] for uid in expected}
    for ev in recurring_ical_events.of(cal).between(START, END):
        if str(ev["UID"]) in got:
            got[str(ev["UID"])].append(ev.start.astimezone(UTC))
    assert {uid: sorted(v) for uid, v in got.items()} == expected


def test_a_move_across_a_pause_boundary_shows_where_the_planner_sends(
    db: Database, clock: FakeClock
) -> None:
    """The actual (moved) start decides whether an occurrence is paused, in the feed as in
    the planner: moved out of a pause, it shows; moved into one, it does not."""
    now = clock.now()  # Mon 2026-01-05 12:00 UTC; the check-in is daily at 21:00 Berlin
    cid = couple_with_partners(db, now)
    rid = add_ritual(db, now, cid, "five-minute-check-in")
    with db.session() as s:
        c, r = s.get(Couple, cid), s.get(Ritual, rid)
        assert c is not None and r is not None
        couples.pause(s, now, c, datetime(2026, 1, 7, 12, 0, tzinfo=UTC))
        skips.move(
            s, now, r, datetime(2026, 1, 6, 20, 0, tzinfo=UTC), datetime(2026, 1, 7, 14, 0)
        )  # out of the pause
        skips.move(
            s, now, r, datetime(2026, 1, 8, 20, 0, tzinfo=UTC), datetime(2026, 1, 7, 10, 0)
        )  # into it
    window = (now, datetime(2026, 1, 9, 12, 0, tzinfo=UTC))
    want = [datetime(2026, 1, 7, 13, 0, tzinfo=UTC), datetime(2026, 1, 7, 20, 0, tzinfo=UTC)]
    cal = Calendar.from_ical(_feed(db, cid, now))
    assert (
        sorted(e.start.astimezone(UTC) for e in recurring_ical_events.of(cal).between(*window))
        == want
    )
    planner.plan(db.write_engine, now, timedelta(hours=96), 30)
    with db.session() as s:
        planned = {
            due + timedelta(minutes=offset)
            for due, offset in s.execute(
                sa.select(Reminder.due_at, Reminder.offset_minutes).where(
                    Reminder.ritual_id == rid, Reminder.due_at < window[1]
                )
            )
        }
    assert sorted(planned) == want


def test_vtimezone_and_pins_reach_twenty_years_past_today(db: Database, clock: FakeClock) -> None:
    """An old series: the VTIMEZONE's listed changes and the DST pins end 20 years after
    today, not after the DTSTART (which would stop them in 2025); then the zone's current
    rule recurs, so the VTIMEZONE never runs out."""
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(
        db, now, cid, kind="custom", title="Late", at="02:30", every="daily", on="2005-03-01"
    )
    text = _feed(db, cid, now).decode()
    onsets = re.findall(r"BEGIN:DAYLIGHT\r\nDTSTART:(\d{4})", text)
    assert onsets[0] == "2004" and onsets[-2] == "2046", onsets  # a year before DTSTART on
    assert re.search(
        r"BEGIN:DAYLIGHT\r\nDTSTART:20470331T020000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r\n",
        text,
    )
    pins = re.findall(r"RECURRENCE-ID;TZID=Europe/Berlin:(\d{4})", text)
    assert pins[0] == "2005" and pins[-1] == "2046" and len(pins) == 2 * 42


def test_if_modified_since_over_http(db: Database, clock: FakeClock, hearth: Hearth) -> None:
    """RFC 9110: an HTTP-date in any of its forms counts, in UTC ("-0000" and asctime parse
    without a zone); a value that is not one HTTP-date is ignored, never a 500."""
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "five-minute-check-in")
    with db.session() as s:
        token = feed_tokens.issue(s, now, partners.resolve(s, "Alice"))
    later = now + timedelta(hours=1)
    fresh = [
        f"{later:%a, %d %b %Y %H:%M:%S} -0000",
        f"{later:%a, %d %b %Y %H:%M:%S} GMT",
        f"{later:%A, %d-%b-%y %H:%M:%S} GMT",
        f"{later:%a %b} {later.day:2d} {later:%H:%M:%S %Y}",  # asctime
    ]
    stale = f"{later:%a, %d %b %Y %H:%M:%S} +0200"  # 11:00 UTC, before the 12:00 change
    malformed = [
        "yesterday",
        "",
        f"{later:%a, 32 %b %Y %H:%M:%S} GMT",
        f"{later:%a, %d %b 99999 %H:%M:%S} GMT",
        f"{later:%a, %d %b %Y %H:%M:%S} +9999",
        f"{later:%a, %d %b %Y %H:%M:%S} GMT, {later:%a, %d %b %Y %H:%M:%S} GMT",  # a list
    ]
    with serve(hearth) as base, httpx.Client(base_url=base) as http:
        url = f"/feeds/{token}.ics"
        body = http.get(url).content
        got = {
            ims: http.get(url, headers={"If-Modified-Since": ims})
            for ims in [*fresh, stale, *malformed]
        }
    assert [got[ims].status_code for ims in fresh] == [304] * len(fresh)
    assert got[stale].status_code == 200
    for ims in malformed:
        assert (got[ims].status_code, got[ims].content) == (200, body), ims


def test_a_removed_count_series_writes_only_the_limit_that_ends_first(
    db: Database, clock: FakeClock
) -> None:
    """RFC 5545 forbids UNTIL with COUNT: removal cuts a COUNT=10 series short (UNTIL alone),
    and leaves one whose three instances were over by then as it was (COUNT alone)."""
    now = clock.now()  # Mon 5 Jan 12:00 UTC; both start that evening at 21:00 Berlin
    cid = couple_with_partners(db, now)
    ten = add_ritual(
        db, now, cid, kind="custom", title="Ten", at="21:00", rrule="FREQ=DAILY;COUNT=10"
    )
    three = add_ritual(
        db, now, cid, kind="custom", title="Three", at="21:00", rrule="FREQ=DAILY;COUNT=3"
    )
    removed = now + timedelta(days=3)  # 8 Jan 12:00 UTC
    with db.session() as s:
        for rid in (ten, three):
            r = s.get(Ritual, rid)
            assert r is not None
            rituals.remove(s, removed, r)
    text = _feed(db, cid, removed).decode()
    rules = re.findall(r"SUMMARY:(\w+)\r\n.*?RRULE:(\S+)\r\n", text, re.S)
    assert sorted(rules) == [
        ("Ten", "FREQ=DAILY;UNTIL=20260108T120000Z"),
        ("Three", "FREQ=DAILY;COUNT=3"),
    ]
    expected = _expected(db, [ten, three])
    cal = Calendar.from_ical(text)
    got: dict[str, list[datetime]] = {uid: [] for uid in expected}
    for ev in recurring_ical_events.of(cal).between(START, END):
        got[str(ev["UID"])].append(ev.start.astimezone(UTC))
    assert got == expected
    assert sorted(map(len, got.values())) == [3, 3]


def test_a_series_removed_before_its_first_instance_is_cancelled(
    db: Database, clock: FakeClock
) -> None:
    """Not an UNTIL before DTSTART (parsers differ on whether DTSTART then still counts)."""
    now = clock.now()
    cid = couple_with_partners(db, now)
    rid = add_ritual(
        db, now, cid, kind="custom", title="Someday", at="21:00", every="daily", on="2026-02-01"
    )
    with db.session() as s:
        r = s.get(Ritual, rid)
        assert r is not None
        rituals.remove(s, now + timedelta(days=1), r)
    text = _feed(db, cid, now).decode()
    (ev,) = Calendar.from_ical(text).walk("VEVENT")
    assert str(ev["STATUS"]) == "CANCELLED" and "RRULE" not in ev
    start = _prop(ev, "DTSTART", vDDDTypes).dt
    assert start == datetime(2026, 2, 1, 21, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert "UNTIL" not in text


@pytest.mark.node
def test_calendar_name_needs_no_escaping(
    db: Database, clock: FakeClock, icaljs: Path, tmp_path: Path
) -> None:
    """NAME and X-WR-CALNAME are TEXT, but ical.js and icalendar read ``\\,`` and ``\\;``
    back with the backslash: the default name has no character TEXT escapes, so every
    reader shows what was written."""
    now = clock.now()
    name = "Zoë, Ana; A\\B Ünal"  # a comma, a semicolon, a backslash and non-ASCII
    cid = couple_with_partners(db, now, name=name)
    add_ritual(db, now, cid, "five-minute-check-in")
    body = _feed(db, cid, now)
    shown = "Zoë · Ana · A · B Ünal — rituals"
    for prop in ("NAME", "X-WR-CALNAME"):
        assert f"\r\n{prop}:{shown}\r\n".encode() in body
    cal = Calendar.from_ical(body)
    assert str(cal["NAME"]) == str(cal["X-WR-CALNAME"]) == shown
    ics = tmp_path / "feed.ics"
    ics.write_bytes(body)
    script = (
        'import ICAL from "ical.js"; import { readFileSync } from "node:fs";'
        "const c = new ICAL.Component(ICAL.parse(readFileSync(process.argv[1], 'utf8')));"
        "console.log(JSON.stringify([c.getFirstPropertyValue('name'),"
        " c.getFirstPropertyValue('x-wr-calname')]));"
    )
    run = subprocess.run(
        ["node", "--input-type=module", "-e", script, str(ics)],
        cwd=JS,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(run.stdout) == [shown, shown]


def test_token_shape_is_matched_in_full() -> None:
    token = "q" * 20 + "Zx9_-" + "k" * 18
    assert feed_tokens.well_formed(token)
    for bad in (token + "\n", token[:-1], token + "k", token[:-1] + "=", " " + token[1:]):
        assert not feed_tokens.well_formed(bad), repr(bad)


def _builds(http: httpx.Client) -> float:
    """hearth_feed_builds_total as /metrics shows it (a process-wide counter: use deltas)."""
    text = http.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "hearth_feed_builds":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError("hearth_feed_builds_total not on /metrics")


def test_partners_with_and_without_alarms_both_get_304s_without_a_build(
    db: Database, clock: FakeClock, hearth: Hearth
) -> None:
    """Alice subscribes with ?alarms=1, Sam without: their polls must not evict each other's
    build, or every conditional request would build the calendar again."""
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "five-minute-check-in")
    with db.session() as s:
        alice = feed_tokens.issue(s, now, partners.resolve(s, "Alice"))
        sam = feed_tokens.issue(s, now, partners.resolve(s, "Sam"))
    with serve(hearth) as base, httpx.Client(base_url=base) as http:
        before = _builds(http)
        with_alarms = http.get(f"/feeds/{alice}.ics?alarms=1")
        without = http.get(f"/feeds/{sam}.ics")
        assert b"BEGIN:VALARM" in with_alarms.content and b"VALARM" not in without.content
        assert _builds(http) == before + 2
        for _ in range(3):
            for url, first in (
                (f"/feeds/{alice}.ics?alarms=1", with_alarms),
                (f"/feeds/{sam}.ics", without),
            ):
                again = http.get(url, headers={"If-None-Match": first.headers["etag"]})
                assert again.status_code == 304
        assert _builds(http) == before + 2


def test_last_modified_moves_with_a_body_that_depends_on_the_date(
    db: Database, clock: FakeClock, hearth: Hearth
) -> None:
    """An open-ended pause is shown a fixed span ahead of today, so the body changes daily
    while the couple does not: Last-Modified must follow, or an If-Modified-Since client
    keeps yesterday's copy. A couple whose body depends on the data only keeps its date."""
    now = clock.now()
    paused = couple_with_partners(db, now, name="Paused")
    steady = couple_with_partners(db, now, name="Steady")
    tokens = {}
    with db.session() as s:
        for cid in (paused, steady):
            couple = couples.resolve(s, cid)
            rituals.add(s, now, couple, rituals.RitualSpec(), "five-minute-check-in")
            tokens[cid] = feed_tokens.issue(s, now, partners.resolve(s, f"{couple.name}/Alice"))
        couples.pause(s, now, couples.resolve(s, paused), None)  # open-ended
    with serve(hearth) as base, httpx.Client(base_url=base) as http:
        first = {cid: http.get(f"/feeds/{tokens[cid]}.ics") for cid in (paused, steady)}
        clock.advance(timedelta(days=1))
        since = {cid: {"If-Modified-Since": first[cid].headers["last-modified"]} for cid in first}
        moved = http.get(f"/feeds/{tokens[paused]}.ics", headers=since[paused])
        assert moved.status_code == 200 and moved.content != first[paused].content
        assert moved.headers["last-modified"] == "Tue, 06 Jan 2026 00:00:00 GMT"  # today
        again = {"If-Modified-Since": moved.headers["last-modified"]}
        assert http.get(f"/feeds/{tokens[paused]}.ics", headers=again).status_code == 304
        kept = http.get(f"/feeds/{tokens[steady]}.ics", headers=since[steady])
        assert kept.status_code == 304
        assert kept.headers["last-modified"] == first[steady].headers["last-modified"]


def test_every_404_is_the_same(db: Database, clock: FakeClock, hearth: Hearth) -> None:
    """Bad token characters, over-long paths, route misses under /feeds and elsewhere, a
    trailing slash (no redirect), HEAD: one status, one body, one set of headers."""
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "five-minute-check-in")
    with db.session() as s:
        token = feed_tokens.issue(s, now, partners.resolve(s, "Alice"))
        rotated = feed_tokens.issue(s, now, partners.resolve(s, "Sam"))
        feed_tokens.issue(s, now, partners.resolve(s, "Sam"))
    misses = [
        f"/feeds/{rotated}.ics",
        "/feeds/" + "A" * 43 + ".ics",
        f"/feeds/{token[:-1]}!.ics",
        f"/feeds/{token}%0A.ics",
        f"/feeds/{token[:-2]}%C3%A9.ics",
        f"/feeds/{token[:20]}%20{token[21:]}.ics",
        "/feeds/..%2F..%2Fetc%2Fpasswd.ics",
        "/feeds/" + "A" * 4000 + ".ics",
        "/feeds/" + "a/" * 1000 + "b.ics",
        f"/feeds/{token}",
        f"/feeds/{token}.ICS",
        f"/feeds/{token}.ics/",
        f"/feeds/a/{token}.ics",
        "/feeds/a/b.ics",
        "/feeds/",
        "/feeds",
        "/nowhere",
    ]
    with serve(hearth) as base, httpx.Client(base_url=base) as http:
        assert http.get(f"/feeds/{token}.ics").status_code == 200
        answers = {path: http.get(path) for path in misses}
        heads = {path: http.head(path) for path in misses}

    def shape(r: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
        return r.status_code, r.content, {k: v for k, v in r.headers.items() if k != "date"}

    want = (
        404,
        b"Not Found\n",
        {"content-type": "text/plain; charset=utf-8", "content-length": "10", "server": "uvicorn"},
    )
    assert {path: shape(r) for path, r in answers.items()} == {path: want for path in misses}
    want_head = (404, b"", want[2])  # HEAD: the same headers, no body
    assert {path: shape(r) for path, r in heads.items()} == {path: want_head for path in misses}


def test_polls_are_read_on_the_loop_only_from_a_sqlite_file(sqlite_db: Database) -> None:
    """A second connection sees a SQLite file; it would see an empty in-memory database, and
    a PostgreSQL lookup is a network round trip that must not block the event loop."""
    assert feed_tokens.LoopReader.for_engine(sqlite_db.engine) is not None
    for url in ("sqlite://", "sqlite:///file:x?cache=shared&uri=true", "postgresql+psycopg://h/d"):
        assert feed_tokens.LoopReader.for_engine(sa.create_engine(url)) is None, url


def test_the_loop_reader_makes_no_database_of_its_own(tmp_path: Path) -> None:
    gone = tmp_path / "moved-away.db"
    reader = feed_tokens.LoopReader(str(gone))
    assert reader.stamp("A" * 43) is False  # the thread path then answers, or fails loudly
    reader.close()
    assert not gone.exists()


def test_the_loop_reader_never_waits_for_a_locked_database(
    sqlite_db: Database, clock: FakeClock, tmp_path: Path
) -> None:
    """While another process holds the file exclusively, the reader says at once that it
    cannot answer (the request then goes to a feed thread, which may wait); afterwards it
    reads again, and sees what that process wrote."""
    now = clock.now()
    cid = couple_with_partners(sqlite_db, now)
    with sqlite_db.session() as s:
        token = feed_tokens.issue(s, now, partners.resolve(s, "Alice"))
        stamp = couples.resolve(s, cid).change_stamp
    copy = tmp_path / "copy.db"  # a file no pooled connection has open, so it can be locked
    src, dst = sqlite3.connect(str(sqlite_db.engine.url.database)), sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.close()
    holder = sqlite3.connect(copy, isolation_level=None)
    reader = feed_tokens.LoopReader(str(copy))
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE couple SET change_stamp = change_stamp + 1")
        assert reader.stamp(token) is False
        holder.execute("COMMIT")
        holder.close()  # in exclusive locking mode, the lock goes only with the connection
        found = reader.stamp(token)
        assert found and (found.couple_id, found.change_stamp) == (cid, stamp + 1)
        assert reader.stamp("A" * 43) is None
    finally:
        reader.close()
        holder.close()
    assert reader.stamp(token) is False  # closed: every request takes the thread path


def test_a_day_before_is_the_same_wall_time_the_evening_before_everywhere(
    run_sqlite: Cli, clock: FakeClock
) -> None:
    """A reminder "1 day before" a 21:00 ritual the day summer time starts is at 21:00 the
    evening before (20:00 UTC, not the 19:00 that 1,440 minutes would give): in the outbox,
    in `ritual preview` and in the feed's VALARM (TRIGGER:-P1D, read by
    recurring-ical-events)."""
    run = run_sqlite
    clock.set(datetime(2027, 3, 26, 12, 0, tzinfo=UTC))
    run.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")
    run.ok("partner", "add", "1", "Alice", "--phone", "+4915123456789", "--sms-consent", "form")
    run.ok("ritual", "add", "1", "-t", "five-minute-check-in", "--remind", "1d,7d,30m")
    sunday = datetime(2027, 3, 28, 19, 0, tzinfo=UTC)  # 21:00 CEST
    want = {
        1440: datetime(2027, 3, 27, 20, 0, tzinfo=UTC),  # Saturday 21:00 CET
        10080: datetime(2027, 3, 21, 20, 0, tzinfo=UTC),  # the Sunday before, 21:00 CET
        30: datetime(2027, 3, 28, 18, 30, tzinfo=UTC),
    }
    preview = json.loads(run.ok("ritual", "preview", "1", "--count", "3", "--json").output)
    (entry,) = [p for p in preview if p["start"] == sunday.isoformat()]
    assert {r["minutes_before"]: r["at"] for r in entry["reminders"]} == {
        m: at.isoformat() for m, at in want.items()
    }
    table = run.ok("ritual", "preview", "1", "--count", "3").output
    assert "1d: Sat 03-27 21:00" in table and "7d: Sun 03-21 21:00" in table
    db = run.hearth.db
    planner.plan(db.write_engine, datetime(2027, 3, 20, tzinfo=UTC), timedelta(days=9), 30)
    with db.session() as s:
        rows = s.execute(
            sa.select(Reminder.offset_minutes, Reminder.due_at).where(
                Reminder.occurrence_start == sunday
            )
        ).all()
    assert {m: due.astimezone(UTC) for m, due in rows} == want
    with db.session() as s:
        couple = couples.resolve(s, 1)
        body = feeds.build_calendar(couple, list(couple.rituals), now=clock.now(), alarms=True)
    assert b"TRIGGER:-P1D\r\n" in body and b"TRIGGER:-P7D\r\n" in body
    cal = Calendar.from_ical(body)
    alarms = {
        alarm["TRIGGER"].dt.astimezone(UTC)
        for ev in recurring_ical_events.of(cal, components=["VALARM"]).between(
            want[10080] - timedelta(days=1), sunday
        )
        if ev.start == sunday
        for alarm in ev.walk("VALARM")
    }
    assert alarms == set(want.values())


@pytest.mark.node
@pytest.mark.parametrize("tz", interop.ZONES)
def test_three_readers_agree_with_the_planner(
    sqlite_db: Database, clock: FakeClock, icaljs: Path, tmp_path: Path, tz: str
) -> None:
    """The cross-check of tests/interop.py, sampled: in each of the 13 zones, one kind of
    ritual (daily, weekly, monthly, yearly) per wall time in turn, at the exact onset, inside
    and at the exact end of every 2027 gap and fold and lasting across it; a daily 21:00 one
    skipped and moved into a gap and onto a repeated time; offsets of minutes, hours, whole
    days and a day and an hour; read in the ten days around each change of 2026, 2027 and
    2045 from a feed built in January 2026. Every occurrence's start, end and reminders, to
    the second, in recurring-ical-events, ical.js and ``ical``, as the planner sends them.
    The whole matrix (every kind at every wall, whole years): ``python -m bench.feed_interop``."""
    db, now = sqlite_db, clock.now()
    cid = interop.build(db, now, tz, sample=True)
    windows = interop.windows_near([tz])
    want = interop.planned(db, cid, windows)
    body = _feed(db, cid, now, alarms=True)
    assert sum(map(len, want.values())) > 50
    assert all(occ and all(o[2] for o in occ) for occ in want.values())  # each has reminders
    for name, got in (
        ("recurring-ical-events", interop.recurring_ical_events_reading(body, windows)),
        ("ical.js", interop.icaljs_reading(body, tmp_path, windows)),
        ("ical", interop.ical_reading(body, windows)),
    ):
        assert interop.differences(want, got) == [], name


@pytest.mark.node
def test_one_offs_across_a_change_end_and_remind_alike_in_every_reader(
    sqlite_db: Database, clock: FakeClock, icaljs: Path, tmp_path: Path
) -> None:
    """A repair talk at 01:30 New York time the night the clocks go forward, 45 minutes (it
    ends at 03:15 EDT, not before it starts), and one at 01:30 the night they go back (the
    first 01:30), 90 minutes: DTEND and absolute alarms, so start, end and reminders agree."""
    db, now = sqlite_db, clock.now()
    cid = couple_with_partners(db, now, name="Talks", tz="America/New_York")
    with db.session() as s:
        couple = couples.resolve(s, cid)
        for start, minutes in (
            (datetime(2027, 3, 14, 6, 30, tzinfo=UTC), 45),
            (datetime(2027, 11, 7, 5, 30, tzinfo=UTC), 90),
        ):
            rituals.add_one_off(
                s,
                now,
                couple,
                kind=RitualKind.REPAIR,
                title="Repair talk",
                description="",
                start=start,
                duration_minutes=minutes,
                offsets=[0, 30, 90, 1440],
            )
    windows = ((datetime(2027, 3, 1, tzinfo=UTC), datetime(2027, 12, 1, tzinfo=UTC)),)
    want = interop.planned(db, cid, windows)
    assert sorted((o[0], o[1]) for occ in want.values() for o in occ) == [
        (datetime(2027, 3, 14, 6, 30, tzinfo=UTC), datetime(2027, 3, 14, 7, 15, tzinfo=UTC)),
        (datetime(2027, 11, 7, 5, 30, tzinfo=UTC), datetime(2027, 11, 7, 7, 0, tzinfo=UTC)),
    ]
    body = _feed(db, cid, now, alarms=True)
    for name, got in (
        ("recurring-ical-events", interop.recurring_ical_events_reading(body, windows)),
        ("ical.js", interop.icaljs_reading(body, tmp_path, windows)),
        ("ical", interop.ical_reading(body, windows)),
    ):
        assert interop.differences(want, got) == [], name
