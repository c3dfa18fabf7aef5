"""The partner page over real HTTP: headers, the one 404, CSRF, the rate limit, refusals that
change nothing, writes that go through the CLI's service functions, the links (CLI, LINK by
text, the email footer), the query count, and logs that never show a token."""

from __future__ import annotations

import html
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
import structlog

from service.core.clock import FakeClock
from service.core.config import LogFormat, LogSettings
from service.core.logs import REDACTED, configure
from service.core.metrics import REGISTRY
from service.db.context import Hearth
from service.db.models import (
    Channel,
    ConsentState,
    Couple,
    Reminder,
    ReminderPurpose,
    ReminderState,
    Ritual,
)
from service.domain import couples, grants, partners
from service.domain import unsubscribe as links
from service.outbox import planner, texts
from service.replies import inbound, repair
from service.runtime.daemon import Daemon
from service.web.limiter import WRITE_LIMIT, WRITE_WINDOW
from service.web.page import tokens as page_tokens
from service.web.page import view as partner_page
from tests.conftest import Cli, make_settings, snapshot
from tests.page_helpers import Page, make_couple, served_page
from tests.web import serve


@pytest.fixture
def page(hearth: Hearth) -> Iterator[Page]:
    with served_page(hearth) as p:
        yield p


@pytest.fixture
def lite(sqlite_hearth: Hearth) -> Iterator[Page]:
    with served_page(sqlite_hearth) as p:
        yield p


def _post(page: Page, action: str, token: str | None = None, **form: str) -> httpx.Response:
    data = {"csrf": page_tokens.csrf(token or page.token), **form}
    return httpx.post(f"{page.base}/page/{token or page.token}/{action}", data=data)


def _errors(r: httpx.Response) -> list[str]:
    """The inline error lines the page shows, as a person reads them."""
    return [
        html.unescape(m)
        for m in re.findall(r'<p class="error" role="alert"[^>]*>(.*?)</p>', r.text)
    ]


def _metric(kind: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "hearth_page_requests_total", {"kind": kind, "outcome": outcome}
    )
    return value or 0.0


def test_the_page_answers_with_its_security_headers(lite: Page) -> None:
    r = httpx.get(lite.url)
    assert r.status_code == 200
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "noindex" in r.headers["x-robots-tag"]
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp  # no script may run
    assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
    assert '<meta name="robots" content="noindex, nofollow">' in r.text
    assert "<script" not in r.text
    assert "Hearth for Alice" in r.text and "Five-minute check-in" in r.text
    css = httpx.get(lite.base + "/static/page.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_every_wrong_page_path_is_the_feeds_one_404(lite: Page) -> None:
    with lite.hearth.db.session() as s:
        old = lite.token
        alice = partners.resolve(s, "Alice")
        new = page_tokens.issue(s, lite.hearth.clock.now(), alice, lite.hearth.keys)
    feed_404 = httpx.get(f"{lite.base}/feeds/{'x' * 43}.ics")
    assert feed_404.status_code == 404
    wrong = [
        ("GET", f"/page/{old}"),  # rotated
        ("GET", f"/page/{'A' * 43}"),  # never issued
        ("GET", "/page/short"),
        ("GET", f"/page/{new}/"),
        ("GET", f"/page/{new}/pause"),  # an action is POST only
        ("POST", f"/page/{new}"),
        ("POST", f"/page/{new}/no-such-action"),
        ("POST", f"/page/{old}/pause"),
        ("GET", "/page"),
        ("GET", "/page/"),
        ("GET", f"/page/from-email/{'u' * 43}"),
    ]
    for method, path in wrong:
        r = httpx.request(method, lite.base + path, data={"csrf": page_tokens.csrf(old)})
        assert (r.status_code, r.text, r.headers["content-type"]) == (
            404,
            feed_404.text,
            feed_404.headers["content-type"],
        ), (method, path)
        assert set(r.headers) == set(feed_404.headers), (method, path)
    assert httpx.get(f"{lite.base}/page/{new}").status_code == 200


def test_a_form_without_the_pages_csrf_token_is_refused_and_changes_nothing(page: Page) -> None:
    before = snapshot(page.hearth.db)
    other_token = "B" * 43
    for data in ({}, {"csrf": "nope"}, {"csrf": page_tokens.csrf(other_token)}):
        r = httpx.post(f"{page.url}/pause", data={**data, "until": "2026-01-11"})
        assert r.status_code == 403
        assert "This form is out of date" in r.text
    assert snapshot(page.hearth.db) == before


def test_writes_are_rate_limited_per_token_on_the_injected_clock(lite: Page) -> None:
    clock = lite.hearth.clock
    assert isinstance(clock, FakeClock)
    before = _metric("write", "rate_limited")
    # Refused forms count too: the limit is on attempts, not on successes.
    for _ in range(WRITE_LIMIT):
        assert _post(lite, "settings", quiet_hours="bad").status_code == 400
    r = _post(lite, "settings", quiet_hours="22:00-07:00", timezone="Europe/Berlin")
    assert r.status_code == 429 and "Too many changes" in r.text
    assert lite.partner().quiet_start is None
    assert _metric("write", "rate_limited") == before + 1
    clock.advance(WRITE_WINDOW)
    r = _post(
        lite,
        "settings",
        quiet_hours="22:00-07:00",
        timezone="Europe/Berlin",
        channel_sms="on",
        channel_email="on",
    )
    assert r.status_code == 303
    assert lite.partner().quiet_start is not None


def test_bad_quiet_hours_show_the_clis_message_and_change_nothing(page: Page, run: Cli) -> None:
    before = snapshot(page.hearth.db)
    r = _post(page, "settings", quiet_hours="25:00-07:00", timezone="Asia/Tokyo", channel_sms="on")
    assert r.status_code == 400
    cli = run("partner", "edit", "Alice", "--quiet", "25:00-07:00")
    assert cli.exit_code == 2
    line = cli.output.strip().splitlines()[-1].removeprefix("error: ")
    assert line == "quiet hours: '25:00' is not a time of day (use HH:MM, e.g. 21:00)"
    assert _errors(r) == [line]
    assert 'id="error-settings"' in r.text
    assert 'value="25:00-07:00"' in r.text  # what the partner typed stays in the field
    assert snapshot(page.hearth.db) == before  # the zone was not changed either


def test_pause_and_resume_record_the_clis_events_and_tell_the_other_partner(page: Page) -> None:
    before = _metric("write", "ok")
    r = _post(page, "pause", until="2026-01-11")
    assert r.status_code == 303 and r.headers["location"] == f"{page.path}?done=paused"
    assert r.headers["cache-control"] == "no-store"
    with page.hearth.db.session() as s:
        c = s.get(Couple, page.couple_id)
        assert c is not None and c.is_paused(page.hearth.clock.now())
        assert c.paused_until is not None
        assert c.paused_until.isoformat() == "2026-01-11T23:00:00+00:00"  # Berlin midnight
    assert page.events()[-1] == "couple.paused"
    assert page.notices() == ["Hearth: Alice paused your reminders through Sun, Jan 11."]
    shown = httpx.get(f"{page.url}?done=paused").text
    assert "Paused. Your partner has been told." in shown
    assert "All reminders are paused through Sunday, January 11, 2026." in shown
    assert _post(page, "resume").status_code == 303
    assert page.events()[-1] == "couple.resumed"
    assert page.notices()[-1] == "Hearth: Alice turned your reminders back on."
    again = _post(page, "resume")  # not paused any more: the CLI's refusal
    assert again.status_code == 400
    assert _errors(again) == ["couple 'Alice & Sam' is not paused"]
    assert _metric("write", "ok") == before + 2


def test_skip_repair_settings_and_email_resubscribe_go_through_the_service(lite: Page) -> None:
    with lite.hearth.db.session() as s:
        ritual_id = s.scalar(sa.text("SELECT id FROM ritual"))
        alice = partners.resolve(s, "Alice")
        partners.set_consent(
            s,
            lite.hearth.clock.now(),
            alice,
            ConsentState.OPTED_OUT,
            "email unsubscribe",
            channel=Channel.EMAIL,
        )
    assert _post(lite, "skip", ritual=str(ritual_id)).status_code == 303
    assert lite.events()[-1] == "occurrence.skipped"
    assert (
        lite.notices()[-1]
        == "Hearth: Alice skipped the ritual on Mon, Jan 5; no reminder for that one."
    )
    assert _post(lite, "repair").status_code == 303
    assert lite.events()[-1] == "repair.requested"
    assert _post(lite, "repair").status_code == 400  # one pending at a time, as by text
    r = _post(
        lite,
        "settings",
        quiet_hours="22:30-07:00",
        timezone="America/New_York",
        channel_sms="on",
        text_style="full",
    )
    assert r.status_code == 303
    p = lite.partner()
    assert (p.timezone, p.channels, p.full_text) == ("America/New_York", "sms", True)
    assert partners.format_quiet(p) == "22:30-07:00"
    page = httpx.get(lite.url).text
    assert "Emails: off, you unsubscribed." in page
    assert _post(lite, "resubscribe").status_code == 303
    assert lite.partner().email_opted_out_at is None
    assert lite.events()[-1] == "partner.opted_in"


def test_a_cached_page_follows_every_change_and_the_clock(lite: Page) -> None:
    clock = lite.hearth.clock
    assert isinstance(clock, FakeClock)
    first = httpx.get(lite.url).text
    assert httpx.get(lite.url).text == first  # from the cache
    with lite.hearth.db.session() as s:  # a change made elsewhere: the admin's CLI
        c = s.get(Couple, lite.couple_id)
        assert c is not None
        couples.pause(s, clock.now(), c, None)
    paused = httpx.get(lite.url).text
    assert "All reminders are paused until you resume them." in paused
    with lite.hearth.db.session() as s:  # a repair request by text touches no couple stamp
        c = s.get(Couple, lite.couple_id)
        assert c is not None
        repair.request(s, clock.now(), c, None, "sms")
    assert "A conversation is being arranged." in httpx.get(lite.url).text
    clock.advance(timedelta(hours=10))  # the 21:00 check-in has passed: the next ones show
    later = httpx.get(lite.url).text
    assert "Mon, Jan 5, 9:00 PM" in paused and "Mon, Jan 5, 9:00 PM" not in later


def test_a_german_partners_page_is_german_and_the_other_reads_their_own(page: Page) -> None:
    english = httpx.get(page.url).text
    assert '<html lang="en">' in english and '<option value="en" lang="en" selected>' in english
    r = _post(
        page,
        "settings",
        quiet_hours="",
        timezone="Europe/Berlin",
        channel_sms="on",
        channel_email="on",
        text_style="discreet",
        language="de",
    )
    assert r.status_code == 303 and page.partner().language == "de"
    german = httpx.get(f"{page.url}?done=saved").text
    assert '<html lang="de">' in german and "<title>Hearth für Alice</title>" in german
    assert "Deine Einstellungen sind gespeichert." in german
    for words in (
        "Eure Rituale",
        "Erinnerungen pausieren",
        "In deinen Kalender",
        "Mo., 5. Jan., 21:00",
        "Erinnerung um 21:00 per SMS",
        '<option value="de" lang="de" selected>Deutsch</option>',
    ):
        assert words in german, words
    visible = re.sub(r"<[^>]+>", " ", german.split("<main", 1)[1])
    for english_words in (
        "Your rituals",
        "Pause reminders",
        "Reminder ",
        "Save settings",
        "Jan 5",
        "PM",
    ):
        assert english_words not in visible, english_words
    assert _post(page, "pause", until="2026-01-11").status_code == 303
    assert "Alle Erinnerungen sind bis einschließlich Sonntag, 11. Januar 2026 pausiert." in (
        httpx.get(page.url).text
    )
    # Sam reads English: the notice is written in the reader's language, not the writer's.
    assert page.notices()[-1] == "Hearth: Alice paused your reminders through Sun, Jan 11."
    bad = _post(page, "settings", language="fr", timezone="Europe/Berlin")
    assert bad.status_code == 400 and page.partner().language == "de"
    assert '<html lang="de">' in bad.text


def test_the_subscribe_links_work_and_rotating_them_cuts_the_old_ones_off(lite: Page) -> None:
    view = _view(lite)
    assert view.feed is not None
    feed = view.feed
    assert feed.webcal.startswith("webcal://") and feed.https.endswith(".ics")
    assert httpx.get(lite.base + feed.https.split("8080", 1)[-1]).status_code == 200
    assert _post(lite, "rotate-feed").status_code == 303
    new_feed = _view(lite).feed
    assert new_feed is not None and new_feed.https != feed.https
    path = "/feeds/" + feed.https.rsplit("/feeds/", 1)[1]
    assert httpx.get(lite.base + path).status_code == 404
    # A new page link keeps the calendar: it shows the feed kept under the keys.
    r = _post(lite, "rotate-link")
    assert r.status_code == 303
    new_token = r.headers["location"].split("/page/", 1)[1].split("?", 1)[0]
    assert httpx.get(lite.url).status_code == 404
    lite.token = new_token
    kept = _view(lite).feed
    assert kept is not None and kept.https == new_feed.https


def test_without_keys_a_new_calendar_link_is_shown_once_on_the_answer(
    sqlite_hearth: Hearth,
) -> None:
    """Without encryption keys no feed token is kept: a page link brings none, the page
    offers one, and the answer to that form shows it (there is no other time it can)."""
    db, clock = sqlite_hearth.db, sqlite_hearth.clock
    bare = Hearth(settings=make_settings(db, encryption={"keys": ""}), db=db, clock=clock)
    with served_page(bare) as lite:
        first = httpx.get(lite.url).text
        assert "You have no calendar link yet." in first and 'id="new-feed"' in first
        assert 'id="sub-apple"' not in first and lite.partner().feed_token_hash is None
        shown = _post(lite, "rotate-feed")
        assert shown.status_code == 200 and 'id="sub-apple"' in shown.text
        assert "Your calendar has a new link." in shown.text
        found = re.search(r'id="feed-url" readonly value="([^"]+)"', shown.text)
        assert found is not None
        https = html.unescape(found[1])
        feed = httpx.get(lite.base + "/feeds/" + https.rsplit("/feeds/", 1)[1])
        assert feed.status_code == 200 and "BEGIN:VCALENDAR" in feed.text
        assert lite.partner().feed_token_kept is None  # nothing to open it with
        again = httpx.get(lite.url).text  # not shown twice; the calendar keeps working
        assert 'id="sub-apple"' not in again and 'id="new-feed"' in again
        assert https.rsplit("/", 1)[1] not in again


def _view(page: Page) -> partner_page.View:
    with page.hearth.db.session() as s:
        p = partner_page.load(s, page.token)
        assert p is not None
        hearth = page.hearth
        return partner_page.build(s, p, hearth.clock.now(), hearth.settings.web, None, hearth.keys)


def test_partner_link_prints_the_url_once_and_rotates(run_sqlite: Cli) -> None:
    hearth = run_sqlite.hearth
    make_couple(hearth)
    refused = run_sqlite("partner", "link", "Alice", "--no-qr")
    assert refused.exit_code == 2 and "already has a page link" in refused.output
    out = run_sqlite.ok("partner", "link", "Sam", "--json").output
    url = json.loads(out)["url"]
    assert url.startswith("http://127.0.0.1:8080/page/")
    rotated = run_sqlite.ok("partner", "link", "Sam", "--rotate").output
    assert "▀" in rotated or "█" in rotated  # the QR code
    new = next(w for w in rotated.split() if "/page/" in w)
    with serve(hearth) as base:
        assert httpx.get(base + url.split("8080", 1)[1]).status_code == 404
        assert httpx.get(base + new.split("8080", 1)[1]).status_code == 200


def test_link_by_text_sends_a_new_page_link_and_help_names_it(lite: Page) -> None:
    assert "LINK (your page)" in inbound.HELP_TEXT
    with lite.hearth.db.session(immediate=True) as s:
        alice = partners.resolve(s, "Alice")
        answer = inbound.handle(lite.hearth, s, lite.hearth.clock.now(), alice, "link", "SM1")
    assert answer is not None and answer.startswith("Hearth: your own page")
    url = next(w for w in answer.split() if "/page/" in w)
    assert httpx.get(lite.base + "/page/" + url.split("/page/", 1)[1]).status_code == 200
    assert httpx.get(lite.url).status_code == 404  # the link before stops


def test_the_email_footer_leads_to_a_button_that_opens_a_new_page(lite: Page) -> None:
    p = lite.partner()
    with lite.hearth.db.session() as s:
        unsub_token = links.token(s, s.merge(p))
        grant = grants.issue(s, lite.hearth.clock.now(), s.merge(p), None)
    unsubscribe = f"{lite.base}/unsubscribe/{unsub_token}"
    with lite.hearth.db.session() as s:
        ritual = s.scalars(sa.select(Ritual)).one()
        ctx = texts.Context(
            ritual=ritual,
            partner=p,
            purpose=ReminderPurpose.NUDGE,
            occurrence_start=lite.hearth.clock.now(),
            prompt=None,
            unsubscribe_url=unsubscribe,
            page_url=grants.url(lite.base, grant),
        )
        msg = texts.email_message(ctx, "alice@example.org", 1)
    footer = next(line for line in msg.text.splitlines() if line.startswith("Your own page"))
    link = footer.rsplit(" ", 1)[1]
    assert link == f"{lite.base}/page/from-email/{grant}"
    before = snapshot(lite.hearth.db)
    shown = httpx.get(link)  # a mail scanner following the link changes nothing
    assert shown.status_code == 200 and "Open my page" in shown.text
    assert snapshot(lite.hearth.db) == before
    assert httpx.post(link, data={"open": "1"}).status_code == 403  # no CSRF token
    r = httpx.post(link, data={"open": "1", "csrf": grants.csrf(grant)})
    assert r.status_code == 303
    assert httpx.get(lite.base + r.headers["location"]).status_code == 200
    assert httpx.get(lite.url).status_code == 404
    again = httpx.post(link, data={"open": "1", "csrf": grants.csrf(grant)})
    assert again.status_code == 404  # single use
    assert httpx.get(lite.base + r.headers["location"]).status_code == 200  # not rotated again


def test_a_page_view_costs_the_same_queries_whatever_the_number_of_rituals(
    sqlite_hearth: Hearth,
) -> None:
    counts = []
    for n in (1, 8):
        with sqlite_hearth.db.engine.begin() as conn:
            for table in (
                "reminder",
                "event",
                "occurrence_exception",
                "ritual",
                "consent_record",
                "partner",
                "couple",
            ):
                conn.execute(sa.text(f"DELETE FROM {table}"))
        _, token = make_couple(sqlite_hearth, rituals=n)
        seen: list[str] = []

        sa.event.listen(sqlite_hearth.db.engine, "before_cursor_execute", _counter(seen))
        try:
            with sqlite_hearth.db.session() as s:
                p = partner_page.load(s, token)
                assert p is not None
                view = partner_page.build(
                    s, p, sqlite_hearth.clock.now(), sqlite_hearth.settings.web
                )
        finally:
            sa.event.remove(sqlite_hearth.db.engine, "before_cursor_execute", _LISTENERS.pop())
        assert len(view.rituals) == n
        counts.append(len(seen))
    assert counts[0] == counts[1], counts
    assert counts[0] <= 12


_LISTENERS: list[Callable[..., None]] = []


def _counter(seen: list[str]) -> Callable[..., None]:
    def count(conn: object, cursor: object, statement: str, *rest: object) -> None:
        seen.append(statement)

    _LISTENERS.append(count)
    return count


def test_no_token_reaches_the_log(lite: Page) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure(LogSettings(format=LogFormat.JSON, level="debug"), stream)
    try:
        httpx.get(lite.url)
        _post(lite, "settings", quiet_hours="nope")
        r = _post(lite, "rotate-link")
        new = r.headers["location"].split("/page/", 1)[1].split("?", 1)[0]
        httpx.get(f"{lite.base}/page/{lite.token[:20]}%0A{lite.token[20:]}")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()
    text = stream.getvalue()
    for secret in (lite.token, lite.token[:20], lite.token[20:], new, page_tokens.csrf(lite.token)):
        assert secret not in text
    assert "/page/" + REDACTED in text and "page_write" in text


def test_the_daemon_replans_after_a_pause_from_the_page(lite: Page) -> None:
    hearth = lite.hearth
    planner.plan(hearth.db.write_engine, hearth.clock.now(), timedelta(hours=48), 30)
    daemon = Daemon(hearth, transports={}, web=False)
    daemon.handle_events()
    assert _states(hearth) == {"scheduled"}
    assert _post(lite, "pause", until="2026-01-11").status_code == 303
    daemon.handle_events()
    assert "scheduled" not in _states(hearth, nudges_only=True)
    assert _post(lite, "resume").status_code == 303
    daemon.handle_events()
    assert "scheduled" in _states(hearth, nudges_only=True)


def _states(hearth: Hearth, nudges_only: bool = False) -> set[str]:
    with hearth.db.session() as s:
        stmt = sa.select(Reminder.state)
        if nudges_only:
            stmt = stmt.where(Reminder.ritual_id.is_not(None))
        return {ReminderState(x).value for x in s.scalars(stmt)}
