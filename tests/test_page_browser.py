"""The partner page in a real browser: a phone-sized Chromium opens the link, checks where
each subscribe button goes, pauses and resumes (and the daemon honours both), is refused bad
quiet hours with the database unchanged, and finds a rotated link gone. No test may see a
JavaScript error in the console (a CSP violation is one)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from service.core.crypto import Keyring
from service.db import migrate
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Partner, Reminder, ReminderState
from service.domain import partners
from service.outbox import planner
from service.runtime.daemon import Daemon
from service.web.page import tokens as page_tokens
from tests.browser import DESKTOP, PHONE, Tab
from tests.conftest import TEST_KEY, snapshot
from tests.factories import add_ritual, couple_with_partners
from tests.page_helpers import Page, served_page
from tests.processes import free_port, wait_for


@pytest.fixture
def page(sqlite_hearth: Hearth) -> Iterator[Page]:
    with served_page(sqlite_hearth) as p:
        yield p


@pytest.fixture
def phone(chromium: Any) -> Iterator[Tab]:
    tab = Tab(chromium, PHONE)
    yield tab
    errors = tab.errors
    tab.close()
    assert errors == [], errors


def _nudges(hearth_db: Database) -> set[str]:
    with hearth_db.session() as s:
        stmt = sa.select(Reminder.state).where(Reminder.ritual_id.is_not(None))
        return {ReminderState(x).value for x in s.scalars(stmt)}


def test_the_link_opens_on_a_phone_and_every_button_goes_where_it_should(
    page: Page, phone: Tab
) -> None:
    response = phone.page.goto(page.url)
    assert response is not None and response.status == 200
    # Nothing wider than the phone: no sideways scrolling.
    assert phone.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # Every field has a label a screen reader announces.
    unlabelled = phone.page.evaluate(
        "[...document.querySelectorAll('input:not([type=hidden])')]"
        ".filter(i => i.labels.length === 0).map(i => i.name)"
    )
    assert unlabelled == []
    https = phone.page.input_value("#feed-url")  # the copy-link field
    assert https.startswith("http://127.0.0.1:8080/feeds/") and https.endswith(".ics")
    webcal = phone.page.get_attribute("#sub-apple", "href")
    assert webcal == "webcal://" + https.split("://", 1)[1]
    google = urlsplit(phone.page.get_attribute("#sub-google", "href") or "")
    assert (google.scheme, google.netloc, google.path) == (
        "https",
        "calendar.google.com",
        "/calendar/render",
    )
    assert parse_qs(google.query) == {"cid": [webcal]}
    outlook = urlsplit(phone.page.get_attribute("#sub-outlook", "href") or "")
    assert (outlook.netloc, outlook.path) == ("outlook.live.com", "/calendar/0/addfromweb")
    assert parse_qs(outlook.query) == {"url": [https], "name": ["Alice & Sam"]}
    assert phone.page.locator(".qr svg").count() == 1
    # The copied link is a working subscription (the public base URL is the default one).
    feed = httpx.get(page.base + "/feeds/" + https.rsplit("/feeds/", 1)[1])
    assert feed.status_code == 200 and feed.headers["content-type"].startswith("text/calendar")
    assert "Five-minute check-in" in phone.page.inner_text("main")


def test_pause_and_resume_from_the_phone_and_the_daemon_honours_both(
    page: Page, phone: Tab
) -> None:
    hearth = page.hearth
    planner.plan(hearth.db.write_engine, hearth.clock.now(), timedelta(hours=48), 30)
    daemon = Daemon(hearth, transports={}, web=False)
    daemon.handle_events()
    assert _nudges(hearth.db) == {"scheduled"}
    phone.page.goto(page.url)
    phone.page.fill("#until", "2026-01-11")
    phone.page.click("#pause")
    assert phone.page.url.endswith("?done=paused")
    main = phone.page.inner_text("main")
    assert "All reminders are paused through Sunday, January 11, 2026." in main
    daemon.handle_events()
    assert _nudges(hearth.db) == {"cancelled"}
    assert page.notices()[-1].startswith("Hearth: Alice paused your reminders")
    phone.page.click("#resume")
    assert phone.page.url.endswith("?done=resumed")
    daemon.handle_events()
    assert "scheduled" in _nudges(hearth.db)


def test_bad_quiet_hours_show_the_error_and_leave_the_database_as_it_was(
    page: Page, phone: Tab
) -> None:
    phone.page.goto(page.url)
    before = snapshot(page.hearth.db)
    phone.page.fill("#quiet_hours", "25:00-07:00")
    with phone.page.expect_navigation() as nav:
        phone.page.click("#save")
    assert nav.value is not None and nav.value.status == 400
    error = phone.page.locator("#error-settings")
    assert error.is_visible()
    assert error.inner_text() == "quiet hours: '25:00' is not a time of day (use HH:MM, e.g. 21:00)"
    assert phone.page.input_value("#quiet_hours") == "25:00-07:00"
    assert snapshot(page.hearth.db) == before
    # Corrected, it saves and the page shows it.
    phone.page.fill("#quiet_hours", "22:00-07:00")
    phone.page.click("#save")
    assert phone.page.url.endswith("?done=saved")
    assert phone.page.input_value("#quiet_hours") == "22:00-07:00"
    # Choosing German in the settings: the page (and every text after it) is German.
    phone.page.select_option("#language", "de")
    phone.page.click("#save")
    assert phone.page.locator("html").get_attribute("lang") == "de"
    assert phone.page.locator("h1").inner_text() == "Hearth für Alice"
    assert phone.page.locator("#done").inner_text() == "Deine Einstellungen sind gespeichert."
    assert phone.page.locator("label[for=quiet_hours]").inner_text() == "Ruhezeit (dann keine SMS)"


def test_a_rotated_link_gives_the_one_404(page: Page, phone: Tab) -> None:
    phone.page.goto(page.url)
    phone.page.click("#rotate-link")
    assert phone.page.url.endswith("?done=link")
    new_url = phone.page.url.split("?", 1)[0]
    assert new_url != page.url
    old = phone.page.goto(page.url)
    assert old is not None and old.status == 404
    assert phone.page.inner_text("body").strip() == "Not Found"
    again = phone.page.goto(new_url)
    assert again is not None and again.status == 200
    # The calendar came along: the subscribe buttons are still there.
    assert phone.page.locator("#sub-apple").count() == 1


def test_the_page_on_a_desktop(page: Page, chromium: Any) -> None:
    tab = Tab(chromium, DESKTOP)
    try:
        tab.page.goto(page.url)
        assert tab.page.locator("h1").inner_text() == "Hearth for Alice"
        assert tab.errors == []
    finally:
        tab.close()


@pytest.mark.slow
def test_against_hearth_serve_subscribe_pause_and_quiet_hours_from_a_phone(
    tmp_path: Path, phone: Tab
) -> None:
    """The issue's story on a running ``hearth serve`` in real time: a partner on SMS opens
    the link from a text, subscribes, changes quiet hours, pauses until Sunday; the daemon
    honours each change within seconds."""
    url = f"sqlite:///{tmp_path / 'hearth.db'}"
    db = Database(url)
    migrate.upgrade(db)
    now = datetime.now(UTC)
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "five-minute-check-in")
    with db.session() as s:
        token = page_tokens.issue(s, now, partners.resolve(s, "Alice"), Keyring((TEST_KEY,)))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env.update(
        HEARTH_DATABASE_URL=url,
        HEARTH_WEB_PORT=str(port),
        HEARTH_WEB_PUBLIC_BASE_URL=base,
        HEARTH_DAEMON_EVENT_POLL_SECONDS="0.5",
        HEARTH_LOG_FORMAT="json",
        HEARTH_ENCRYPTION_KEYS=TEST_KEY,  # the key the page link's feed token is kept under
    )
    out = tmp_path / "serve.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve"], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: b"daemon_started" in out.read_bytes(), 30, "hearth serve")
        wait_for(lambda: _up(base), 30, "hearth serve's web service")
        wait_for(lambda: _nudges(db) == {"scheduled"}, 15, "the first plan")
        tab = phone.page
        tab.goto(f"{base}/page/{token}")
        feed = httpx.get(tab.input_value("#feed-url"))
        assert feed.status_code == 200 and b"BEGIN:VCALENDAR" in feed.content
        tab.fill("#quiet_hours", "20:00-23:00")
        tab.click("#save")
        assert tab.url.endswith("?done=saved")
        assert "falls in your quiet hours" in tab.inner_text("main")
        with db.session() as s:
            alice = s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one()
            assert partners.format_quiet(alice) == "20:00-23:00"
        local = now.astimezone(ZoneInfo(alice.timezone)).date()
        sunday = local + timedelta(days=(6 - local.weekday()) or 7)
        tab.fill("#until", sunday.isoformat())
        tab.click("#pause")
        assert tab.url.endswith("?done=paused")
        wait_for(lambda: _nudges(db) == {"cancelled"}, 10, "the daemon to drop paused nudges")
        tab.click("#resume")
        wait_for(lambda: "scheduled" in _nudges(db), 10, "the daemon to plan nudges again")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        db.dispose()


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
