"""The shared question for every partner, over real peers: a discreet SMS partner (Alice, the
stand-in receives her texts through the real twilio client) and an email-only partner (Sam,
the SMTP sink receives his mail) each answer on their own page, over real HTTP. What each
test asserts is what the peers received, per recipient, and what each page shows.
"""

from __future__ import annotations

import html
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from service.channels import build
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Couple, Partner, Prompt, Reminder
from service.domain import answers, export, partners
from service.outbox import planner, retention
from service.outbox.dispatcher import Dispatcher
from service.web.page import tokens as page_tokens
from tests import peers
from tests.conftest import make_settings, snapshot
from tests.factories import TONIGHT, add_ritual, couple_with_partners
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn
from tests.web import serve

ALICE = "+4915123456789"
RIVER = "The walk by the river at dusk"
DINNER = "Cooking dinner together & laughing"
_LINK = re.compile(r"https?://\S+/page/from-email/\S+")


@dataclass
class Loop:
    hearth: Hearth
    base: str
    http: httpx.Client
    standin: TwilioStandIn
    sink: SmtpSink
    dispatcher: Dispatcher

    def texts(self) -> list[str]:
        return [r.body or "" for r in self.standin.sent if r.to == ALICE]

    def mails(self, to: str = "sam@example.org") -> list[str]:
        return [m.text() for m in self.sink.messages if to in m.rcpt_tos]

    def open(self, link: str) -> str:
        """The page behind a message's link: the button there, pressed (a GET alone never
        issues a link); the page link it lands on."""
        path = link.split("://", 1)[1].split("/", 1)[1]
        button = self.http.get("/" + path)
        assert button.status_code == 200
        found = re.search(r'name="csrf" value="([^"]+)"', button.text)
        assert found, "the button's form carries its CSRF token"
        csrf = html.unescape(found[1])
        r = self.http.post("/" + path, data={"open": "1", "csrf": csrf})
        assert r.status_code == 303
        return str(r.headers["location"])

    def page(self, path: str) -> str:
        r = self.http.get(path)
        assert r.status_code == 200
        return r.text

    def post(self, path: str, action: str, **form: str) -> httpx.Response:
        token = path.rsplit("/", 1)[1].split("?")[0]
        data = {"csrf": page_tokens.csrf(token), **form}
        return self.http.post(f"{path}/{action}", data=data)


@pytest.fixture
def loop(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> Iterator[Loop]:
    """Alice texts (discreet, the default), Sam only emails; tonight's check-in asks."""
    settings = make_settings(db, **peers.sections(twilio_standin, smtp_sink))
    hearth = Hearth(settings=settings, db=db, clock=clock)
    now = clock.now()
    cid = couple_with_partners(db, now)
    with db.session() as s:
        alice = partners.resolve(s, "Alice")
        partners.edit(s, now, alice, channels="sms")
    add_ritual(db, now, cid, "five-minute-check-in")
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)
    d = Dispatcher(hearth, build(settings), rng=random.Random(3))
    with serve(hearth) as base, httpx.Client(base_url=base, timeout=10) as http:
        yield Loop(hearth, base, http, twilio_standin, smtp_sink, d)
    d.close()


def _asked(loop: Loop) -> tuple[str, str, str]:
    """Tonight's nudges out; (the question, Alice's page path, Sam's page path)."""
    assert isinstance(loop.hearth.clock, FakeClock)
    loop.hearth.clock.set(TONIGHT)
    assert loop.dispatcher.run_once().sent == 2
    (text,) = loop.texts()
    (mail,) = loop.mails()
    with loop.hearth.db.session() as s:
        asked = sa.select(Reminder.prompt_id).where(Reminder.prompt_id.is_not(None)).limit(1)
        question = s.scalars(
            sa.select(Prompt.text).where(Prompt.id == asked.scalar_subquery())
        ).one()
    assert question in mail  # the email names it in full
    # Sam takes no texts and there is no reply mailbox here: he is sent to his page.
    assert "Answer on your page: your partner sees your answer" in mail
    assert "Answer by text message" not in mail
    # Alice's lock screen: no question and no ritual's name, only the way to her page.
    assert question not in text and "check-in" not in text.lower()
    assert "A question for you two is on your page:" in text and "STOP" in text
    alice = loop.open(_LINK.findall(text)[0])
    sam = loop.open(_LINK.findall(mail)[0])  # the email's own page link
    return question, alice, sam


def test_a_discreet_and_an_email_partner_answer_on_their_pages_and_see_the_reveal(
    loop: Loop,
) -> None:
    question, alice, sam = _asked(loop)
    for path in (alice, sam):
        page = loop.page(path)
        assert html.escape(question) in page and 'id="answer"' in page
    assert (
        loop.post(alice, "answer", ritual="1", occurrence=_key(loop), answer=RIVER).status_code
        == 303
    )
    # Before Sam answers, his page shows no word of hers, and hers none of a reveal.
    assert RIVER not in loop.page(sam) and html.escape(RIVER) in loop.page(alice)
    assert "You have both answered." not in loop.page(alice)
    assert loop.dispatcher.run_once().sent == 0  # nothing told to anyone yet
    r = loop.post(sam, "answer", ritual="1", occurrence=_key(loop), answer=DINNER)
    assert r.status_code == 303 and r.headers["location"].endswith("?done=answered")
    # The reveal on each one's own channel, once each: Alice a discreet text pointing to her
    # page, Sam an email with her answer.
    assert loop.dispatcher.run_once().sent == 2
    texts, mails = loop.texts(), loop.mails()
    assert len(texts) == 2 and len(mails) == 2
    assert texts[1].startswith("Hearth: your partner answered too.") and DINNER not in texts[1]
    assert _LINK.search(texts[1])
    assert RIVER in mails[1] and question in mails[1]
    # Both pages show both answers, and both keep them under "Our questions".
    for path, theirs in ((alice, DINNER), (sam, RIVER)):
        page = loop.page(path)
        assert "You have both answered." in page and html.escape(theirs) in page
        assert "Our questions" in page and page.count(html.escape(theirs)) == 2
    # The answers are final: a second answer is refused, nothing changes.
    before = snapshot(loop.hearth.db)
    again = loop.post(alice, "answer", ritual="1", occurrence=_key(loop), answer="changed")
    assert again.status_code == 400 and "shared already" in again.text
    assert snapshot(loop.hearth.db) == before


def test_either_partner_forgets_their_own_answer_and_the_export_carries_the_rest(
    loop: Loop,
) -> None:
    question, alice, sam = _asked(loop)
    loop.post(alice, "answer", ritual="1", occurrence=_key(loop), answer=RIVER)
    loop.post(sam, "answer", ritual="1", occurrence=_key(loop), answer=DINNER)
    r = loop.post(alice, "forget", ritual="1", occurrence=_key(loop))
    assert r.status_code == 303 and r.headers["location"].endswith("?done=forgotten")
    for path in (alice, sam):
        page = loop.page(path)
        assert html.escape(RIVER) not in page and "(forgotten)" in page
        assert html.escape(DINNER) in page
    with loop.hearth.db.session() as s:
        couple = s.scalars(sa.select(Couple)).one()
        out = export.export_couple(s, couple, loop.hearth.clock.now(), loop.hearth.keys)
    assert sorted(str(a["text"]) for a in out["answers"]) == [DINNER, "None"]
    assert [q["text"] for q in out["questions"]] == [question]
    assert {a["prompt_id"] for a in out["answers"]} == {out["questions"][0]["id"]}
    # Forgetting twice: one clear line, nothing changed.
    before = snapshot(loop.hearth.db)
    twice = loop.post(alice, "forget", ritual="1", occurrence=_key(loop))
    assert twice.status_code == 400 and "no answer of yours to forget" in twice.text
    assert snapshot(loop.hearth.db) == before


def test_bad_answers_are_refused_with_one_line_and_change_nothing(loop: Loop) -> None:
    _, alice, _ = _asked(loop)
    before = snapshot(loop.hearth.db)
    empty = loop.post(alice, "answer", ritual="1", occurrence=_key(loop), answer="   ")
    assert empty.status_code == 400 and "answer: write a few words first" in empty.text
    # The field is focused and the error comes first, above every other section.
    assert 'aria-invalid="true" autofocus' in empty.text
    assert empty.text.index("error-answer") < empty.text.index('id="h-calendar"')
    other = loop.post(
        alice, "answer", ritual="1", occurrence="2020-01-01T20:00:00+00:00", answer="x"
    )
    assert other.status_code == 400 and "this question has closed" in other.text
    broken = loop.post(alice, "answer", ritual="x", occurrence="y", answer="x")
    assert broken.status_code == 400
    too_long = loop.post(alice, "answer", ritual="1", occurrence=_key(loop), answer="я" * 1601)
    assert too_long.status_code == 400 and "at most 1600 characters" in too_long.text
    assert snapshot(loop.hearth.db) == before
    # The longest answer, in any script, is taken (it is well over the other forms' limit).
    longest = "я" * 1600
    ok = loop.post(alice, "answer", ritual="1", occurrence=_key(loop), answer=longest)
    assert ok.status_code == 303 and longest in loop.page(alice)
    # Once the occurrence has closed (the next one began), the page asks nothing.
    assert isinstance(loop.hearth.clock, FakeClock)
    loop.hearth.clock.advance(timedelta(days=1))
    assert 'id="answer"' not in loop.page(alice)


def test_our_questions_are_paged_newest_first_and_retention_forgets_them(loop: Loop) -> None:
    """Seven evenings answered by both: five on the first page, two on the next, newest
    first; after the retention period they are gone from the page."""
    clock = loop.hearth.clock
    assert isinstance(clock, FakeClock)
    _, alice, sam = _asked(loop)
    for day in range(7):
        if day:
            clock.set(TONIGHT + timedelta(days=day))
            planner.plan(loop.hearth.db.write_engine, clock.now(), timedelta(hours=48), 30)
            loop.dispatcher.run_once()
        key = _key(loop)
        loop.post(alice, "answer", ritual="1", occurrence=key, answer=f"Alice day {day}")
        loop.post(sam, "answer", ritual="1", occurrence=key, answer=f"Sam day {day}")
    first = loop.page(alice)
    shown = re.findall(r"Sam day (\d)", first.split('id="h-past"', 1)[1])
    assert shown == ["6", "5", "4", "3", "2"]
    assert 'id="past-older"' in first and 'id="past-newer"' not in first
    second = loop.page(alice + "?past=2")
    assert re.findall(r"Sam day (\d)", second.split('id="h-past"', 1)[1]) == ["1", "0"]
    assert 'id="past-older"' not in second and 'id="past-newer"' in second
    clock.advance(timedelta(days=400))
    assert retention.prune(loop.hearth)["answers"] == 14
    assert "Sam day" not in loop.page(alice)


def _key(loop: Loop) -> str:
    """The open occurrence, as the page's form posts it."""
    with loop.hearth.db.session() as s:
        couple = s.scalars(sa.select(Couple)).one()
        found = answers.open_question(s, couple, loop.hearth.clock.now(), None)
        assert found is not None
        return found.occurrence.isoformat()


def test_every_partner_takes_part_and_discreet_ones_get_no_answer_by_text(db: Database) -> None:
    """The domain rule: the question is asked when the couple has two partners, whatever
    their channels and lock-screen choice; only full-text SMS partners answer by text."""
    with db.session() as s:
        now = TONIGHT - timedelta(days=1)
        couple_with_partners(db, now)
        alice, sam = (partners.resolve(s, n) for n in ("Alice", "Sam"))
        assert answers.takes_part(alice) and answers.takes_part(sam)
        assert not answers.by_text(alice) and not answers.by_text(sam)
        alice.full_text = True
        assert answers.by_text(alice)
        assert s.scalars(sa.select(Partner)).all()


def test_an_email_only_partner_is_offered_only_the_settings_that_apply(loop: Loop) -> None:
    """No quiet hours and no lock-screen choice without a phone; saving the form keeps
    them as they were. The zone is picked from the IANA list, no placeholder poses as a
    value."""
    with loop.hearth.db.session() as s:
        sam = partners.resolve(s, "Sam")
        now = loop.hearth.clock.now()
        partners.edit(s, now, sam, quiet_hours="23:00-06:00", full_text=True)
        token = page_tokens.issue(s, now, sam, loop.hearth.keys)
    path = f"/page/{token}"
    page = loop.page(path)
    assert 'id="quiet_hours"' not in page and 'name="text_style"' not in page
    assert 'list="zones"' in page and '<option value="America/New_York">' in page
    assert "placeholder=" not in page
    r = loop.post(path, "settings", timezone="Europe/Madrid", channel_email="on", language="es")
    assert r.status_code == 303
    with loop.hearth.db.session() as s:
        sam = partners.resolve(s, "Sam")
        assert (sam.timezone, sam.language) == ("Europe/Madrid", "es")
        assert partners.format_quiet(sam) == "23:00-06:00" and sam.full_text
    # Alice has a phone: both are offered.
    with loop.hearth.db.session() as s:
        alice_p = partners.resolve(s, "Alice")
        alice_token = page_tokens.issue(s, loop.hearth.clock.now(), alice_p, loop.hearth.keys)
    alice = loop.page(f"/page/{alice_token}")
    assert 'id="quiet_hours"' in alice and 'name="text_style"' in alice
