"""``hearth demo``, the middle step of ``make run``: a demo couple a new user can watch work."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import httpx
import sqlalchemy as sa

from cli.demo import HINT, NOT_ADDED
from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, Couple, Partner, Prompt, Reminder, Ritual
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from tests.conftest import Cli, snapshot
from tests.web import serve

URL = re.compile(r"(http://\S+/feeds/(\S+)\.ics)")
PAGE = re.compile(r"^  (\w+): (http://\S+/page/\S+)$", re.MULTILINE)


def _page_urls(output: str) -> dict[str, str]:
    return {who: url for who, url in PAGE.findall(output)}


def _feed_url(output: str) -> str:
    match = URL.search(output)
    assert match, output
    return match.group(1)


def test_demo_creates_a_couple_in_an_empty_database_and_its_nudge_arrives_in_the_console(
    hearth: Hearth, clock: FakeClock, run: Cli
) -> None:
    first = run.ok("demo").output
    assert "created demo couple 'Demo: Alex & Sam'" in first
    assert "goes out at Mon 2026-01-05 12:01 UTC" in first  # default zone: UTC
    assert "tonight's question for both: What made you laugh today?" in first
    assert first.rstrip().endswith(f"next: {HINT}")
    pages = _page_urls(first)
    assert list(pages) == ["Alex", "Sam"]
    with hearth.db.session() as s:
        (couple,) = s.scalars(sa.select(Couple)).all()
        zones = {p.name: p.timezone or couple.timezone for p in couple.partners}
        titles = sorted(r.title for r in s.scalars(sa.select(Ritual)))
    assert len(set(zones.values())) == 2, zones  # two partners in two zones
    assert titles == ["Date night", "Five-minute check-in", "Hello from Hearth", "Three gratitudes"]

    # The daemon's two halves with the console channel: the hello nudge prints on time.
    planner.plan(hearth.db.write_engine, clock.now(), timedelta(hours=48), 30)
    out = io.StringIO()
    d = Dispatcher(hearth, {ch: ConsoleTransport(ch, out) for ch in Channel})
    clock.advance(timedelta(seconds=59))
    assert d.run_once().sent == 0
    clock.advance(timedelta(seconds=1))
    assert d.run_once().sent == 2  # Alex by SMS, Sam by email
    printed = out.getvalue()
    assert "--- sms to +14155550123" in printed and "--- email to sam@example.org" in printed
    # Each partner reads the start in their own zone: UTC for Alex, New York for Sam.
    assert "Hearth: a moment for you two at 12:02 PM" in printed  # Alex's discreet text
    assert "Hello from Hearth at 7:02 AM" in printed
    # The hello asks both the light question (Alex's lock screen shows none of it).
    assert printed.count("What made you laugh today?") == 1  # in Sam's email
    with hearth.db.session() as s:
        hello = s.scalars(sa.select(Ritual).where(Ritual.title == "Hello from Hearth")).one()
        asked = s.scalars(
            sa.select(Prompt.text).join(Reminder, Reminder.prompt_id == Prompt.id)
        ).all()
    assert hello.ask and asked == ["What made you laugh today?"] * 2  # one question, both

    # Both pages open (each on its own partner), with working subscribe links.
    with serve(hearth) as base, httpx.Client(base_url=base) as http:
        for who, url in pages.items():
            page = http.get(url.split("8080", 1)[1])
            assert page.status_code == 200 and who in page.text
            assert "webcal://" in page.text

    # A second run keeps the couple, adds a fresh nudge and new page links; the calendar link
    # is kept (under the keys), so a calendar that subscribed it keeps working.
    second = run.ok("demo").output
    assert "using demo couple" in second and "no longer work" in second
    assert _page_urls(second)["Alex"] != pages["Alex"]
    assert _feed_url(second) == _feed_url(first)
    with serve(hearth) as base, httpx.Client(base_url=base) as http:
        feed = http.get(_feed_url(second).split("8080", 1)[1])
        alex = http.get(_page_urls(second)["Alex"].split("8080", 1)[1]).text
    assert feed.status_code == 200
    assert _feed_url(second).split("/feeds/", 1)[1] in alex  # the new page shows that calendar
    assert feed.text.count("SUMMARY:Hello from Hearth") == 2
    with hearth.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Couple)) == 1
        assert s.scalar(sa.select(sa.func.count()).select_from(Partner)) == 2


def test_demo_is_not_added_to_a_database_with_couples(run: Cli, db: Database) -> None:
    run.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")
    before = snapshot(db)
    result = run.ok("demo")
    (line,) = result.output.strip().splitlines()
    assert line == NOT_ADDED
    assert snapshot(db) == before


def test_an_existing_demo_keeps_working_beside_other_couples(run: Cli, hearth: Hearth) -> None:
    run.ok("demo")
    run.ok("couple", "add", "Alice & Sam", "-z", "Europe/Berlin")
    again = run.ok("demo").output
    assert "using demo couple 'Demo: Alex & Sam'" in again and "no longer work" in again
    with hearth.db.session() as s:
        hellos = s.scalars(sa.select(Ritual).where(Ritual.title == "Hello from Hearth")).all()
    assert len(hellos) == 2
