"""A pause tells the other partner, and calls off a talk that would fall in it: counted at
the Twilio stand-in and the SMTP sink, with every view (page, feed, ``repair list``, the
outbox) agreeing (issue 25, item 5)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from icalendar import Calendar

from service.calendar import feeds
from service.channels import build
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.domain import couples
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from service.replies import repair
from service.web.page import tokens as page_tokens
from tests import peers
from tests.conftest import Cli, make_settings
from tests.page_helpers import Page, served_page
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn
from tests.test_webhooks import text

ALICE_PHONE, ALICE_MAIL, SAM_MAIL = "+4915123456789", "alice@example.org", "sam@example.org"
SLOT = datetime(2026, 1, 6, 17, 0, tzinfo=UTC)  # tomorrow, 18:00 in Berlin
CALLED_OFF = "your planned conversation is called off"
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[.*$\n?", re.M)


@pytest.fixture
def hearth(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> Hearth:
    settings = make_settings(db, **peers.sections(twilio_standin, smtp_sink))
    return Hearth(settings=settings, db=db, clock=clock)


@pytest.fixture
def page(hearth: Hearth) -> Iterator[Page]:
    with served_page(hearth) as p:
        yield p


@pytest.fixture
def dispatcher(hearth: Hearth) -> Iterator[Dispatcher]:
    d = Dispatcher(hearth, build(hearth.settings), rng=random.Random(3))
    yield d
    d.close()


def _pause(page: Page, until: str) -> None:
    data = {"csrf": page_tokens.csrf(page.token), "until": until}
    r = httpx.post(f"{page.url}/pause", data=data)
    assert r.status_code == 303, r.text


def _mail(sink: SmtpSink, to: str) -> list[str]:
    return [m.text() for m in sink.messages if to in m.rcpt_tos]


def _sms(standin: TwilioStandIn, to: str) -> list[str]:
    return [r.body or "" for r in standin.sent if r.to == to]


def test_a_pause_from_the_page_reaches_the_other_partner(
    page: Page, dispatcher: Dispatcher, smtp_sink: SmtpSink, twilio_standin: TwilioStandIn
) -> None:
    _pause(page, "2026-01-11")
    assert dispatcher.run_once().sent == 1
    [told] = _mail(smtp_sink, SAM_MAIL)
    assert "Alice paused your reminders through Sun, Jan 11." in told
    assert _sms(twilio_standin, ALICE_PHONE) == [] and _mail(smtp_sink, ALICE_MAIL) == []


def test_the_same_pause_again_tells_the_other_partner_once(
    page: Page, dispatcher: Dispatcher, smtp_sink: SmtpSink
) -> None:
    """Found by the generated histories: a second, identical pause (a reload, a double tap)
    sent a second identical notice. A different end is news and is told again."""
    _pause(page, "2026-01-11")
    _pause(page, "2026-01-11")
    dispatcher.run_once()
    assert len(_mail(smtp_sink, SAM_MAIL)) == 1
    _pause(page, "2026-01-12")
    dispatcher.run_once()
    assert len(_mail(smtp_sink, SAM_MAIL)) == 2


def test_the_same_pause_texted_twice_tells_the_other_partner_once(
    page: Page, clock: FakeClock, dispatcher: Dispatcher, smtp_sink: SmtpSink
) -> None:
    """Found by the generated histories: PAUSE texted twice at once queued two identical
    notices; with the first one's answer lost, Sam got the same text twice. A pause a
    minute later ends a minute later: that is news, and is told."""
    with httpx.Client(base_url=page.base, timeout=10) as http:
        first = text(http, "PAUSE")
        assert text(http, "PAUSE") == first  # Alice is answered alike...
        dispatcher.run_once()
        assert len(_mail(smtp_sink, SAM_MAIL)) == 1  # ...and Sam is told once
        clock.advance(timedelta(minutes=1))
        text(http, "PAUSE")
    dispatcher.run_once()
    assert len(_mail(smtp_sink, SAM_MAIL)) == 2


def test_a_pause_calls_off_a_talk_in_it_and_every_view_agrees(
    hearth: Hearth,
    page: Page,
    clock: FakeClock,
    dispatcher: Dispatcher,
    smtp_sink: SmtpSink,
    twilio_standin: TwilioStandIn,
) -> None:
    with hearth.db.session(immediate=True) as s:
        c = couples.resolve(s, page.couple_id)
        repair.request(s, clock.now(), c, None, "admin", at=SLOT)
    repair.schedule_pending(hearth)
    planner.plan(hearth.db.write_engine, clock.now(), timedelta(hours=48), 30)
    _pause(page, "2026-01-11")
    run = Cli(hearth)
    # The page's server thread may log a request line into the captured output meanwhile.
    listed = _LOG_LINE.sub("", run.ok("repair", "list", "--json").output)
    [row] = json.loads(listed)
    assert row["state"] == "cancelled"
    shown = httpx.get(page.url).text
    assert "A conversation is being arranged." not in shown
    assert 'id="repair"' in shown  # a new one can be asked for after the pause
    with hearth.db.session() as s:
        c = couples.resolve(s, page.couple_id)
        cal = Calendar.from_ical(feeds.build_calendar(c, list(c.rituals), now=clock.now()))
    talks = [e for e in cal.walk("VEVENT") if e["SUMMARY"] == "Repair conversation"]
    assert all(str(e.get("STATUS")) == "CANCELLED" for e in talks)

    # What the partners' phones and inboxes get, up to past the talk and its follow-up.
    for _ in range(4):
        dispatcher.run_once()
        clock.advance(timedelta(hours=12))
    dispatcher.run_once()
    sam, alice_mail = _mail(smtp_sink, SAM_MAIL), _mail(smtp_sink, ALICE_MAIL)
    alice_sms = _sms(twilio_standin, ALICE_PHONE)
    assert sum("Alice paused your reminders" in m for m in sam) == 1
    # Both are told once on each channel, and nobody is invited or reminded.
    for got in (sam, alice_mail, alice_sms):
        assert sum(CALLED_OFF in m for m in got) == 1, got
    assert [
        m for m in sam + alice_mail + alice_sms if CALLED_OFF not in m and "paused" not in m
    ] == []


def test_a_talk_asked_for_during_a_pause_is_placed_after_it(
    hearth: Hearth, page: Page, clock: FakeClock
) -> None:
    _pause(page, "2026-01-11")  # through Sunday: Monday 00:00 in Berlin ends it
    with hearth.db.session(immediate=True) as s:
        repair.request(s, clock.now(), couples.resolve(s, page.couple_id), None, "admin")
    repair.schedule_pending(hearth)
    [row] = json.loads(_LOG_LINE.sub("", Cli(hearth).ok("repair", "list", "--json").output))
    assert row["state"] == "scheduled"
    assert datetime.fromisoformat(row["slot_start"]) >= datetime(2026, 1, 11, 23, 0, tzinfo=UTC)
