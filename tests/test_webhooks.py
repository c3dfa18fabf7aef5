"""The webhooks over real HTTP: Twilio replies (``/twilio/inbound``), Twilio delivery receipts
(``/twilio/status``) and the email one-click unsubscribe, served by uvicorn and called with
httpx, on SQLite and PostgreSQL.

Signatures are computed the way Twilio computes them, over the configured *public* URL
(``https://hearth.example.org/...``) while the app is reached on ``http://127.0.0.1:PORT``:
the situation behind a reverse proxy. The service-level reply logic is covered by
``test_replies.py``; here each test asserts what a partner sees (the TwiML answer, the texts
that go out or not) and what the database holds afterwards.
"""

from __future__ import annotations

import io
import json
import random
import threading
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from twilio.request_validator import RequestValidator

from service.channels import build_one
from service.channels.base import Message, Receipt, Transport
from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.core.config import Settings
from service.core.metrics import RECEIPT_STATES, REMINDERS
from service.db import optouts
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import (
    Channel,
    CheckIn,
    ConsentRecord,
    ConsentState,
    EarlyReceipt,
    OccurrenceException,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
    RepairRequest,
    Reply,
)
from service.domain import couples, partners
from service.domain.export import export_couple
from service.outbox import planner, receipts, retention
from service.outbox.dispatcher import Dispatcher
from tests.conftest import Cli, make_settings, snapshot
from tests.factories import add_ritual, couple_with_partners
from tests.peers.twilio_standin import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, TwilioStandIn
from tests.web import serve

PUBLIC = "https://hearth.example.org"
TOKEN = DEFAULT_AUTH_TOKEN  # the app and the Twilio stand-in share the account's auth token
ALICE = "+4915123456789"
HEARTH_NUMBER = "+15005550006"
TONIGHT = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)  # 21:00 in Berlin: the check-in's nudge
INBOUND, STATUS = "/twilio/inbound", "/twilio/status"

STOPPED = "Hearth: you will get no more texts. Reply START to opt back in."
STARTED = "Hearth: texts are back on. Reply STOP to opt out, HELP for help."
HELP = (
    "Hearth: reply DONE, SKIP, SNOOZE 30, PAUSE 3D, RESUME, REPAIR, LINK (your page), a mood 1-5 "
    "or your answer. STOP opts out, START in. Msg&data rates may apply."
)
GENTLE = "Hearth: got it. Reply DONE, SKIP, SNOOZE or REPAIR; HELP for more."


def _sections(standin: TwilioStandIn | None = None) -> dict[str, Any]:
    twilio: dict[str, Any] = {
        "account_sid": DEFAULT_ACCOUNT_SID,
        "auth_token": TOKEN,
        "from_number": HEARTH_NUMBER,
        "sender_rate_per_second": 1000,
        "account_rate_per_second": 1000,
        "timeout_seconds": 5,
    }
    sections: dict[str, Any] = {"twilio": twilio, "web": {"public_base_url": PUBLIC}}
    if standin is not None:
        twilio["api_base_url"] = standin.base_url
        sections["channels"] = {"sms": "twilio", "email": "console"}
    return sections


@pytest.fixture
def settings(db: Database) -> Settings:
    """Overrides conftest's: a Twilio auth token and a public URL behind a proxy."""
    return make_settings(db, **_sections())


@pytest.fixture
def base(hearth: Hearth) -> Iterator[str]:
    with serve(hearth) as url:
        yield url


@pytest.fixture
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=10) as client:
        yield client


# -- helpers ------------------------------------------------------------------------------


class Outbox(Transport):
    """Records every message it is given (to read an email's List-Unsubscribe header)."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    def send(self, message: Message) -> Receipt:
        with self._lock:
            self.messages.append(message)
            return Receipt(provider_id=f"outbox-{self.channel.value}-{len(self.messages)}")


def sign(path: str, params: dict[str, str], *, base: str = PUBLIC, token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(base + path, params)


def post(
    http: httpx.Client, path: str, params: dict[str, str], signature: str | None = None
) -> httpx.Response:
    """POST a form as Twilio does; signed over the public URL unless ``signature`` is given
    ("" sends no signature header at all)."""
    sig = sign(path, params) if signature is None else signature
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if sig:
        headers["X-Twilio-Signature"] = sig
    return http.post(path, content=urllib.parse.urlencode(params).encode(), headers=headers)


def sms_from(body: str, sender: str = ALICE, sid: str | None = None) -> dict[str, str]:
    return {
        "AccountSid": DEFAULT_ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "Body": body,
        "From": sender,
        "MessageSid": sid or "SM" + uuid.uuid4().hex,
        "NumMedia": "0",
        "To": HEARTH_NUMBER,
    }


def text(http: httpx.Client, body: str, sender: str = ALICE, sid: str | None = None) -> list[str]:
    """Text Hearth as ``sender``; returns the messages of its TwiML answer."""
    return answer(post(http, INBOUND, sms_from(body, sender, sid)))


def answer(resp: httpx.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].split(";")[0] in {"text/xml", "application/xml"}
    root = ET.fromstring(resp.content)
    assert root.tag == "Response"
    assert [child.tag for child in root] == ["Message"] * len(root)
    return [m.text or "" for m in root]


def _partner(db: Database, name: str = "Alice") -> Partner:
    with db.session() as s:
        p = s.scalars(sa.select(Partner).where(Partner.name == name)).one()
        s.expunge(p)
        return p


def _pending(db: Database, channel: Channel, name: str = "Alice") -> int:
    with db.session() as s:
        return (
            s.scalar(
                sa.select(sa.func.count())
                .select_from(Reminder)
                .join(Partner, Partner.id == Reminder.partner_id)
                .where(
                    Partner.name == name,
                    Reminder.channel == channel,
                    Reminder.state == ReminderState.SCHEDULED,
                )
            )
            or 0
        )


def _plan(hearth: Hearth) -> None:
    """Alice (SMS + email) and Sam (email) with the nightly five-minute check-in."""
    now = hearth.clock.now()
    cid = couple_with_partners(hearth.db, now)
    add_ritual(hearth.db, now, cid, "five-minute-check-in")
    planner.plan(hearth.db.write_engine, now, timedelta(hours=48), 30)


def _dispatcher(hearth: Hearth, transports: dict[Channel, Transport]) -> Dispatcher:
    return Dispatcher(hearth, transports, rng=random.Random(1))


@pytest.fixture
def couple(hearth: Hearth) -> None:
    """Planned, nothing sent yet (noon): Alice has pending texts."""
    _plan(hearth)


@pytest.fixture
def nudged(hearth: Hearth, clock: FakeClock) -> Dispatcher:
    """Tonight's 21:00 nudge went out a minute ago (to DONE, SKIP or SNOOZE)."""
    _plan(hearth)
    d = _dispatcher(hearth, {ch: ConsoleTransport(ch, io.StringIO()) for ch in Channel})
    clock.set(TONIGHT + timedelta(minutes=1))
    assert d.run_once().sent == 3
    return d


# -- signatures ---------------------------------------------------------------------------


def test_a_valid_signature_over_the_public_url_is_answered(
    db: Database, couple: None, http: httpx.Client, base: str
) -> None:
    assert base.startswith("http://127.0.0.1:")  # reached directly, signed for the proxy URL
    resp = post(http, INBOUND, sms_from("help"))
    assert resp.headers["content-type"].startswith(("text/xml", "application/xml"))
    assert answer(resp) == [HELP]
    with db.session() as s:
        assert s.scalars(sa.select(Reply.keyword)).all() == ["HELP"]


BAD_SIGNATURES = {
    "over the local url": lambda base, p: sign(INBOUND, p, base=base),
    "wrong auth token": lambda base, p: sign(INBOUND, p, token="not-the-auth-token"),
    "over other params": lambda base, p: sign(INBOUND, {**p, "Body": "HELP"}),
    "over another path": lambda base, p: sign(STATUS, p),
    "garbage": lambda base, p: "not-base64!!",
    "missing header": lambda base, p: "",
}


def test_a_bad_or_missing_signature_is_refused_and_records_nothing(
    db: Database, couple: None, http: httpx.Client, base: str
) -> None:
    before = snapshot(db)
    for how, signature in BAD_SIGNATURES.items():
        params = sms_from("STOP")
        resp = post(http, INBOUND, params, signature=signature(base, params))
        assert resp.status_code == 403, how
        assert "xml" not in resp.headers["content-type"], how  # no TwiML: no text back
        assert snapshot(db) == before, how
    assert _partner(db).sms_consent is ConsentState.CONSENTED


def test_without_an_auth_token_every_webhook_is_refused(db: Database, clock: FakeClock) -> None:
    hearth = Hearth(settings=make_settings(db, web={"public_base_url": PUBLIC}), db=db, clock=clock)
    _plan(hearth)
    before = snapshot(db)
    with serve(hearth) as base, httpx.Client(base_url=base) as http:
        params = sms_from("STOP")
        for sig in (sign(INBOUND, params), sign(INBOUND, params, token=""), ""):
            assert post(http, INBOUND, params, signature=sig).status_code == 403
        status = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"}
        assert post(http, STATUS, status, signature=sign(STATUS, status)).status_code == 403
    assert snapshot(db) == before


# -- malformed bodies ---------------------------------------------------------------------


def _form(params: dict[str, str]) -> bytes:
    return urllib.parse.urlencode(params).encode()


def _malformed(case: str) -> tuple[bytes, str | None, dict[str, str]]:
    """(body, content type, params the signature covers) for one malformed inbound request."""
    full = sms_from("STOP")  # a valid request would opt Alice out: proof nothing happened
    form = "application/x-www-form-urlencoded"
    if case.startswith("without "):
        params = {k: v for k, v in full.items() if k != case.removeprefix("without ")}
        return _form(params), form, params
    if case == "json":
        return json.dumps(full).encode(), "application/json", full
    if case == "no content type":
        return _form(full), None, full
    if case == "multipart":
        body = "".join(
            f'--xx\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in full.items()
        )
        return (body + "--xx--\r\n").encode(), "multipart/form-data; boundary=xx", full
    if case == "percent-encoded invalid utf-8":
        # A lenient decoder turns %FF into U+FFFD; a signature over that must not pass.
        params = {**full, "Body": "STOP \ufffd"}
        return _form(full).replace(b"Body=STOP", b"Body=STOP+%FF"), form, params
    if case == "raw invalid utf-8":
        params = {**full, "Body": "STOP \xff"}
        return _form(full).replace(b"Body=STOP", b"Body=STOP+\xff"), form, params
    if case == "NUL in Body":
        params = {**full, "Body": "STOP\x00"}
        return _form(params), form, params
    if case == "NUL in From":
        params = {**full, "From": ALICE + "\x00"}
        return _form(params), form, params
    if case == "overlong MessageSid":
        params = {**full, "MessageSid": "SM" + "a" * 200}
        return _form(params), form, params
    if case.startswith("huge"):  # Twilio's forms are a few kB
        params = {**full, "Body": "STOP " + "x" * 2_000_000}
        return _form(params), form, params
    raise AssertionError(case)


MALFORMED = [
    "without From",
    "without Body",
    "without MessageSid",
    "json",
    "no content type",
    "multipart",
    "percent-encoded invalid utf-8",
    "raw invalid utf-8",
    "NUL in Body",
    "NUL in From",
    "overlong MessageSid",
    "huge",
    "huge, chunked",
]


def test_a_malformed_reply_is_a_client_error_and_records_nothing(
    db: Database, couple: None, http: httpx.Client
) -> None:
    before = snapshot(db)
    for case in MALFORMED:
        body, content_type, params = _malformed(case)
        headers = {"X-Twilio-Signature": sign(INBOUND, params)}
        if content_type:
            headers["Content-Type"] = content_type
        content = iter([body[:1000], body[1000:]]) if case.endswith("chunked") else body
        resp = http.post(INBOUND, content=content, headers=headers)
        expected = 413 if case.startswith("huge") else 400
        assert resp.status_code == expected, f"{case}: {resp.status_code} {resp.text[:200]}"
        assert snapshot(db) == before, case
    assert _partner(db).sms_consent is ConsentState.CONSENTED


def test_a_text_from_an_unknown_number_gets_an_empty_answer(
    db: Database, couple: None, http: httpx.Client
) -> None:
    before = snapshot(db)
    assert text(http, "STOP", sender="+15551230000") == []
    assert text(http, "help", sender="+4915123456780") == []  # one digit off Alice's
    assert snapshot(db) == before


# -- keywords -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        (" stop!", "STOP"),
        ("Stop.", "STOP"),
        ("stopall", "STOPALL"),
        ("unsubscribe", "UNSUBSCRIBE"),
        ("Cancel", "CANCEL"),
        ("END", "END"),
        ("quit", "QUIT"),
        ("OptOut", "OPTOUT"),
        ("revoke.", "REVOKE"),
    ],
)
def test_stop_words_opt_out_and_cancel_pending_texts(
    db: Database, couple: None, http: httpx.Client, body: str, keyword: str
) -> None:
    assert _pending(db, Channel.SMS) == 2 and _pending(db, Channel.EMAIL) == 2
    sid = "SM" + uuid.uuid4().hex
    assert text(http, body, sid=sid) == [STOPPED]
    alice = _partner(db)
    assert alice.sms_consent is ConsentState.OPTED_OUT
    assert alice.email_opted_out_at is None
    assert _pending(db, Channel.SMS) == 0  # tonight's and tomorrow's texts are cancelled
    assert _pending(db, Channel.EMAIL) == 2  # emails go on
    assert _pending(db, Channel.EMAIL, "Sam") == 2
    # Twilio retrying the same webhook acts once; an opted-out partner hears nothing more.
    assert text(http, body, sid=sid) == []
    assert text(http, "hello?") == []
    with db.session() as s:
        assert s.scalars(sa.select(Reply.keyword).order_by(Reply.id)).all() == [keyword, None]


def test_a_sentence_starting_with_stop_is_not_an_opt_out(
    db: Database, couple: None, http: httpx.Client
) -> None:
    assert text(http, "stop by the bakery later?") == [GENTLE]
    assert _partner(db).sms_consent is ConsentState.CONSENTED
    assert _pending(db, Channel.SMS) == 2


@pytest.mark.parametrize("body", ["START", "yes", " unstop! "])
def test_start_words_opt_back_in(db: Database, couple: None, http: httpx.Client, body: str) -> None:
    assert text(http, "STOP") == [STOPPED]
    assert text(http, body) == [STARTED]
    assert _partner(db).sms_consent is ConsentState.CONSENTED
    assert text(http, "Stop.") == [STOPPED]  # and out again: consent follows the last word


def test_yes_from_a_subscribed_partner_is_not_an_opt_in(
    db: Database, couple: None, http: httpx.Client
) -> None:
    assert text(http, "yes") == [GENTLE]
    with db.session() as s:
        assert s.scalars(sa.select(Reply.action)).all() == ["stored; help sent"]


@pytest.mark.parametrize("body", ["help", " Info? "])
def test_help_words_answer_with_the_help_text(
    db: Database, couple: None, http: httpx.Client, body: str
) -> None:
    assert text(http, body) == [HELP]
    assert _partner(db).sms_consent is ConsentState.CONSENTED


def test_help_is_answered_after_stop_and_nothing_else_is(
    db: Database, nudged: Dispatcher, http: httpx.Client
) -> None:
    assert text(http, "stop") == [STOPPED]
    assert text(http, "help") == [HELP]
    assert text(http, "done") == []
    assert _partner(db).sms_consent is ConsentState.OPTED_OUT
    with db.session() as s:
        assert s.scalars(sa.select(CheckIn)).all() == []


def test_anything_else_is_stored_with_one_gentle_answer_a_day(
    db: Database, hearth: Hearth, couple: None, http: httpx.Client, clock: FakeClock
) -> None:
    assert text(http, "love you") == [GENTLE]
    assert text(http, "see you tonight") == []
    clock.advance(timedelta(days=1, minutes=1))
    assert text(http, "thanks!") == [GENTLE]
    with db.session() as s:
        stored = s.scalars(sa.select(Reply.body).order_by(Reply.id)).all()
    # Kept sealed: readable with the key only.
    assert [hearth.keys.open(b) for b in stored] == ["love you", "see you tonight", "thanks!"]
    assert not any("love" in b for b in stored)


def test_an_unknown_number_leaves_only_a_redacted_log_line(
    db: Database, couple: None, http: httpx.Client
) -> None:
    before = snapshot(db)
    with capture_logs() as logs:
        assert text(http, "hi it's Jo, call me", sender="+15551230000") == []
    [line] = [e for e in logs if e.get("event") == "reply_from_unknown_number"]
    assert line["sender_ends"] == "00"
    assert "5551230000" not in repr(logs) and "call me" not in repr(logs)
    assert snapshot(db) == before


def test_stop_from_a_shared_number_opts_out_everyone_on_it(
    db: Database, couple: None, http: httpx.Client, clock: FakeClock
) -> None:
    """Consent belongs to the number: a phone both partners gave stops for both."""
    with db.session() as s:
        sam = s.scalars(sa.select(Partner).where(Partner.name == "Sam")).one()
        sam.phone, sam.channels, sam.updated_at = ALICE, "sms,email", clock.now()
        partners.set_consent(s, clock.now(), sam, ConsentState.CONSENTED, "test")
    assert text(http, "STOP") == [STOPPED]
    assert {_partner(db, n).sms_consent for n in ("Alice", "Sam")} == {ConsentState.OPTED_OUT}


def test_done_marks_tonight_done(db: Database, nudged: Dispatcher, http: httpx.Client) -> None:
    assert text(http, "done") == ["Hearth: lovely, Five-minute check-in marked done."]
    with db.session() as s:
        assert s.execute(sa.select(CheckIn.occurrence_start, CheckIn.source)).all() == [
            (TONIGHT, "sms")
        ]


def test_skip_calls_off_the_next_occurrence(
    db: Database, nudged: Dispatcher, http: httpx.Client
) -> None:
    off = "Hearth: skipped, see you next time (Tue, Jan 6, 9:00 PM is off)."
    assert text(http, "Skip!") == [off]
    with db.session() as s:
        assert s.scalars(sa.select(OccurrenceException.original_start)).all() == [
            TONIGHT + timedelta(days=1)
        ]


@pytest.mark.parametrize(
    ("body", "local", "due"),
    [
        ("snooze 45", "9:29 PM", TONIGHT + timedelta(minutes=29)),  # never past the 21:30 expiry
        (" SNOOZE, 10.", "9:11 PM", TONIGHT + timedelta(minutes=11)),
        ("snooze 15 min", "9:16 PM", TONIGHT + timedelta(minutes=16)),
        ("Snooze", "9:29 PM", TONIGHT + timedelta(minutes=29)),
    ],  # default 30, clamped to expiry
)
def test_snooze_resends_the_nudge_later(
    db: Database,
    nudged: Dispatcher,
    http: httpx.Client,
    clock: FakeClock,
    body: str,
    local: str,
    due: datetime,
) -> None:
    with db.session() as s:  # as in production, the email finished a few ms after the text
        s.execute(
            sa.update(Reminder)
            .where(Reminder.channel == Channel.EMAIL)
            .values(sent_at=TONIGHT + timedelta(minutes=1, milliseconds=7))
        )
    assert text(http, body) == [f"Hearth: snoozed, we'll remind you at {local}."]
    with db.session() as s:
        snooze = s.scalars(
            sa.select(Reminder).where(Reminder.purpose == ReminderPurpose.SNOOZE)
        ).one()
        # Alice got tonight's nudge by text and by email; she texted, so a text comes back.
        assert (snooze.state, snooze.due_at, snooze.channel) == (
            ReminderState.SCHEDULED,
            due,
            Channel.SMS,
        )
    clock.set(due)
    assert nudged.run_once().sent == 1


def test_repair_asks_for_a_calm_time_once(
    db: Database, nudged: Dispatcher, http: httpx.Client
) -> None:
    assert text(http, "repair") == [
        "Hearth: we'll find a calm time for you both and text you soon."
    ]
    assert text(http, "REPAIR!") == ["Hearth: a conversation is already being arranged."]
    alice = _partner(db)
    with db.session() as s:
        assert s.scalars(sa.select(RepairRequest.requested_by)).all() == [alice.id]


# -- STOP racing a due reminder -----------------------------------------------------------


@pytest.fixture
def twilio_hearth(db: Database, clock: FakeClock, twilio_standin: TwilioStandIn) -> Hearth:
    """SMS through the real twilio client to the stand-in; email to an outbox."""
    hearth = Hearth(settings=make_settings(db, **_sections(twilio_standin)), db=db, clock=clock)
    _plan(hearth)
    return hearth


def _twilio_dispatcher(hearth: Hearth) -> Dispatcher:
    return _dispatcher(
        hearth,
        {
            Channel.SMS: build_one(hearth.settings, Channel.SMS),
            Channel.EMAIL: Outbox(Channel.EMAIL),
        },
    )


@pytest.mark.parametrize("claimed_first", [False, True], ids=["stop-first", "claimed-first"])
def test_stop_in_the_same_second_as_a_due_text_stops_it(
    db: Database,
    clock: FakeClock,
    twilio_hearth: Hearth,
    twilio_standin: TwilioStandIn,
    claimed_first: bool,
) -> None:
    d = _twilio_dispatcher(twilio_hearth)
    clock.set(TONIGHT)  # Alice's 21:00 text is due now
    with serve(twilio_hearth) as base, httpx.Client(base_url=base) as http:
        if claimed_first:
            # The dispatcher has claimed the due row (state 'sending') when the STOP lands.
            token, ids = d.claim(100)
            assert len(ids) == 3
            assert text(http, "STOP") == [STOPPED]
            d.submit(d.prepare(token, ids))
            d.wait_idle()
        else:
            assert text(http, "STOP") == [STOPPED]
            d.run_once()
    assert twilio_standin.requests == []  # Twilio was never asked to text Alice
    with db.session() as s:
        sms = s.scalars(
            sa.select(Reminder).where(
                Reminder.channel == Channel.SMS, Reminder.occurrence_start == TONIGHT
            )
        ).one()
        emails = s.scalars(
            sa.select(Reminder.state).where(
                Reminder.channel == Channel.EMAIL, Reminder.occurrence_start == TONIGHT
            )
        ).all()
    assert sms.provider_message_id is None and sms.sent_at is None
    assert (sms.state, sms.last_error) == (
        (ReminderState.SKIPPED, "partner opted out of sms")
        if claimed_first
        else (ReminderState.CANCELLED, "opted out")
    )
    assert emails == [ReminderState.SENT, ReminderState.SENT]  # email is unaffected


def test_a_stop_while_a_text_waits_to_go_out_stops_it(
    db: Database, clock: FakeClock, twilio_hearth: Hearth, twilio_standin: TwilioStandIn
) -> None:
    """Gates passed moments ago, the text waits in the pool; the STOP that came meanwhile is
    seen right before the send (no freshness window skips the look)."""
    d = _twilio_dispatcher(twilio_hearth)
    clock.set(TONIGHT)
    token, ids = d.claim(100)
    jobs = d.prepare(token, ids)
    with serve(twilio_hearth) as base, httpx.Client(base_url=base) as http:
        assert text(http, "STOP") == [STOPPED]
    d.submit(jobs)
    d.wait_idle()
    assert twilio_standin.requests == []
    assert _sms_state_tonight(db) == (ReminderState.SKIPPED, "partner opted out of sms")


def _sms_state_tonight(db: Database) -> tuple[ReminderState, str | None]:
    with db.session() as s:
        r = s.scalars(
            sa.select(Reminder).where(
                Reminder.channel == Channel.SMS, Reminder.occurrence_start == TONIGHT
            )
        ).one()
        return r.state, r.last_error


# -- status callbacks ---------------------------------------------------------------------


@pytest.fixture
def texted(
    twilio_hearth: Hearth, clock: FakeClock, twilio_standin: TwilioStandIn
) -> Iterator[tuple[httpx.Client, str]]:
    """Tonight's text went out through Twilio; yields a client for the app and its SID."""
    clock.set(TONIGHT)
    assert _twilio_dispatcher(twilio_hearth).run_once().sent == 3
    [sms] = twilio_standin.sent
    assert sms.status_callback == PUBLIC + STATUS and sms.sid
    clock.advance(timedelta(seconds=5))
    with serve(twilio_hearth) as base, httpx.Client(base_url=base) as http:
        yield http, sms.sid


def _receipt(sid: str, status: str, error: str | None = None) -> dict[str, str]:
    params = {
        "AccountSid": DEFAULT_ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "From": HEARTH_NUMBER,
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": ALICE,
    }
    if error:
        params["ErrorCode"] = error
    return params


def _sms_state(db: Database, sid: str) -> tuple[ReminderState, datetime | None, str | None]:
    with db.session() as s:
        r = s.scalars(sa.select(Reminder).where(Reminder.provider_message_id == sid)).one()
        return r.state, r.final_at, r.last_error


def _report(http: httpx.Client, sid: str, status: str, error: str | None = None) -> None:
    assert post(http, STATUS, _receipt(sid, status, error)).status_code == 204


@pytest.mark.parametrize(
    ("status", "error", "state", "last_error"),
    [
        ("delivered", None, ReminderState.DELIVERED, None),
        ("undelivered", "30007", ReminderState.UNDELIVERED, "twilio 30007"),
        (
            "undelivered",
            "30005",
            ReminderState.FAILED,
            "twilio 30005",
        ),  # permanent: unknown handset
        ("failed", "30008", ReminderState.FAILED, "twilio 30008"),
    ],
)
def test_a_receipt_finalises_the_text_once_and_for_all(
    db: Database,
    clock: FakeClock,
    texted: tuple[httpx.Client, str],
    status: str,
    error: str | None,
    state: ReminderState,
    last_error: str | None,
) -> None:
    http, sid = texted
    now = clock.now()
    _report(http, sid, "queued")
    _report(http, sid, "sent")
    assert _sms_state(db, sid) == (ReminderState.SENT, None, None)
    counted = _receipt_counts()
    _report(http, sid, status, error)
    assert _sms_state(db, sid) == (state, now, last_error)
    counted[status] += 1  # hearth_reminders_total counts the receipt that finalised the text
    assert _receipt_counts() == counted
    final = snapshot(db)
    clock.advance(timedelta(minutes=1))
    _report(http, sid, status, error)  # Twilio's duplicate
    for late in ("sent", "queued", "sending", "accepted", "delivered", "undelivered", "failed"):
        _report(http, sid, late, "30005")  # arriving out of order, after the final state
    assert snapshot(db) == final
    assert _receipt_counts() == counted  # ...and what changed nothing counts nothing


def _receipt_counts() -> dict[str, float]:
    return {s: REMINDERS.labels(channel="sms", state=s)._value.get() for s in RECEIPT_STATES}


def test_an_unreachable_handset_is_texted_again_before_expiry(
    db: Database,
    clock: FakeClock,
    twilio_hearth: Hearth,
    twilio_standin: TwilioStandIn,
    texted: tuple[httpx.Client, str],
) -> None:
    """30003 arrives only as a receipt; it is transient, so the text goes out once more."""
    http, sid = texted
    _report(http, sid, "undelivered", "30003")
    with db.session() as s:
        stmt = sa.select(Reminder).where(
            Reminder.channel == Channel.SMS, Reminder.occurrence_start == TONIGHT
        )
        r = s.scalars(stmt).one()
        assert r.state is ReminderState.SCHEDULED and r.provider_message_id is None
        assert clock.now() < r.next_attempt_at < r.expires_at and r.last_error == "twilio 30003"
        retry_at = r.next_attempt_at
    _report(http, sid, "undelivered", "30003")  # Twilio's duplicate: still one resend
    clock.set(retry_at)
    assert _twilio_dispatcher(twilio_hearth).run_once().sent == 1
    assert len(twilio_standin.sent) == 2 and twilio_standin.sent[1].to == ALICE


def test_a_carrier_opt_out_in_a_receipt_opts_the_number_out(
    db: Database, texted: tuple[httpx.Client, str]
) -> None:
    http, sid = texted
    assert _pending(db, Channel.SMS) == 1  # tomorrow's text
    seen = optouts.generation()
    _report(http, sid, "failed", "21610")
    # Every send in this process reads consent again (issue 25, item 12): on main the
    # receipt's session never committed, so the counter did not move.
    assert optouts.generation() > seen
    assert _partner(db).sms_consent is ConsentState.OPTED_OUT
    assert _pending(db, Channel.SMS) == 0
    with db.session() as s:
        sources = s.scalars(sa.select(ConsentRecord.source).order_by(ConsentRecord.id)).all()
    assert sources[-1] == "carrier 21610"


def test_an_unknown_or_unsigned_receipt_changes_nothing(
    db: Database, texted: tuple[httpx.Client, str]
) -> None:
    http, sid = texted
    before = snapshot(db)
    _report(http, "SM" + "f" * 32, "sent")  # not a text Hearth sent: fine, ignored
    params = _receipt(sid, "failed", "30003")
    assert post(http, STATUS, params, signature="").status_code == 403
    assert post(http, STATUS, params, signature=sign(STATUS, params, token="x")).status_code == 403
    assert post(http, STATUS, params, signature=sign(INBOUND, params)).status_code == 403
    local = str(http.base_url).rstrip("/")
    assert post(http, STATUS, params, signature=sign(STATUS, params, base=local)).status_code == 403
    for params in (
        {"MessageSid": sid},
        {"MessageStatus": "failed"},
        _receipt(sid + "\x00", "failed"),
    ):
        assert post(http, STATUS, params).status_code == 400
    assert snapshot(db) == before
    assert _sms_state(db, sid)[0] is ReminderState.SENT


class _Fixed(Transport):
    """Texts accepted with a known Message SID (as Twilio returns one), to race its receipt."""

    channel = Channel.SMS

    def __init__(self, sid: str) -> None:
        self.sid = sid

    def send(self, message: Message) -> Receipt:
        return Receipt(provider_id=self.sid)


def test_a_receipt_that_beats_the_send_record_is_applied_when_it_is_recorded(
    db: Database, hearth: Hearth, clock: FakeClock, couple: None, http: httpx.Client
) -> None:
    sid = "SM" + "e" * 32
    # Twilio accepted the text and reported it undelivered before the worker wrote the SID.
    _report(http, sid, "undelivered", "30007")
    _report(http, sid, "delivered")  # a later, contradicting report: the first final stands
    assert [r.state for r in _early(db)] == ["undelivered"]
    d = _dispatcher(hearth, {Channel.SMS: _Fixed(sid), Channel.EMAIL: Outbox(Channel.EMAIL)})
    clock.set(TONIGHT + timedelta(minutes=1))
    assert d.run_once().sent == 3
    assert _sms_state(db, sid) == (ReminderState.UNDELIVERED, clock.now(), "twilio 30007")
    assert _early(db) == []


def test_an_early_carrier_opt_out_receipt_still_opts_the_number_out(
    db: Database, hearth: Hearth, clock: FakeClock, couple: None, http: httpx.Client
) -> None:
    sid = "SM" + "c" * 32
    _report(http, sid, "failed", "21610")  # parked: the send is not recorded yet
    d = _dispatcher(hearth, {Channel.SMS: _Fixed(sid), Channel.EMAIL: Outbox(Channel.EMAIL)})
    clock.set(TONIGHT + timedelta(minutes=1))
    assert d.run_once().sent == 3  # the outcome write applies the parked receipt
    assert _early(db) == []
    assert _partner(db).sms_consent is ConsentState.OPTED_OUT
    assert _pending(db, Channel.SMS) == 0


def test_an_early_unreachable_receipt_still_gets_its_resend(
    db: Database, hearth: Hearth, clock: FakeClock, couple: None, http: httpx.Client
) -> None:
    sid = "SM" + "d" * 32
    _report(http, sid, "undelivered", "30003")  # before the worker wrote the SID
    d = _dispatcher(hearth, {Channel.SMS: _Fixed(sid), Channel.EMAIL: Outbox(Channel.EMAIL)})
    clock.set(TONIGHT + timedelta(minutes=1))
    assert d.run_once().sent == 3
    with db.session() as s:
        sms = s.scalars(
            sa.select(Reminder).where(
                Reminder.channel == Channel.SMS, Reminder.occurrence_start == TONIGHT
            )
        ).one()
        assert (sms.state, sms.provider_message_id) == (ReminderState.SCHEDULED, None)
        assert clock.now() < sms.next_attempt_at < sms.expires_at


def test_the_sweep_applies_a_receipt_parked_while_its_send_was_being_recorded(
    db: Database, hearth: Hearth, clock: FakeClock, nudged: Dispatcher, http: httpx.Client
) -> None:
    """On PostgreSQL the webhook's and the worker's transactions can pass each other: the
    worker records the SID without seeing the receipt the webhook is parking. The sweep
    (a daemon job) closes that gap."""
    sid = _sms_sid(db)
    with db.session() as s:  # the receipt landed as if the SID were not recorded yet
        s.add(EarlyReceipt(sid=sid, state="delivered", error=None, received_at=clock.now()))
    assert _sms_state(db, sid)[0] is ReminderState.SENT
    with db.write_engine.begin() as conn:
        assert receipts.sweep(conn, clock.now()) == 1
    assert _sms_state(db, sid) == (ReminderState.DELIVERED, clock.now(), None)
    assert _early(db) == []
    with db.write_engine.begin() as conn:
        assert receipts.sweep(conn, clock.now()) == 0


def _sms_sid(db: Database) -> str:
    with db.session() as s:
        sid = s.scalar(
            sa.select(Reminder.provider_message_id).where(
                Reminder.channel == Channel.SMS, Reminder.state == ReminderState.SENT
            )
        )
    assert sid is not None
    return sid


def test_a_parked_receipt_that_matches_no_send_is_pruned(
    db: Database, hearth: Hearth, clock: FakeClock, couple: None, http: httpx.Client
) -> None:
    _report(http, "SM" + "d" * 32, "delivered")  # another system's text on the same account
    assert len(_early(db)) == 1
    clock.advance(timedelta(days=2, minutes=1))
    retention.prune(hearth)
    assert _early(db) == []


def _early(db: Database) -> list[EarlyReceipt]:
    with db.session() as s:
        return list(s.scalars(sa.select(EarlyReceipt)))


def test_an_overlong_error_code_is_recorded_without_failing(
    db: Database, texted: tuple[httpx.Client, str]
) -> None:
    http, sid = texted
    _report(http, sid, "failed", "9" * 400)
    state, _, last_error = _sms_state(db, sid)
    assert state is ReminderState.FAILED
    assert last_error is not None and last_error.startswith("twilio 999")


# -- email one-click unsubscribe ----------------------------------------------------------


@pytest.fixture
def emailed(hearth: Hearth, clock: FakeClock) -> tuple[Dispatcher, Outbox, Outbox]:
    """Tonight's texts and emails went out; the outboxes hold them (emails with headers)."""
    _plan(hearth)
    texts, outbox = Outbox(Channel.SMS), Outbox(Channel.EMAIL)
    d = _dispatcher(hearth, {Channel.SMS: texts, Channel.EMAIL: outbox})
    clock.set(TONIGHT)
    assert d.run_once().sent == 3
    return d, texts, outbox


def _unsubscribe_url(outbox: Outbox, to: str, base: str) -> str:
    [mail] = [m for m in outbox.messages if m.to == to]
    assert mail.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = mail.headers["List-Unsubscribe"].removeprefix("<").removesuffix(">")
    assert url.startswith(PUBLIC + "/unsubscribe/")
    return base + url.removeprefix(PUBLIC)  # what the proxy forwards


def _one_click(http: httpx.Client, url: str) -> httpx.Response:
    return http.post(
        url,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def test_one_click_unsubscribe_stops_emails_only(
    db: Database,
    clock: FakeClock,
    emailed: tuple[Dispatcher, Outbox, Outbox],
    http: httpx.Client,
    base: str,
) -> None:
    d, texts, outbox = emailed
    url = _unsubscribe_url(outbox, "alice@example.org", base)
    before = snapshot(db)
    page = http.get(url)  # what a mail scanner or a curious click does
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Stop Hearth's reminder emails for Alice?" in page.text
    assert '<form method="post">' in page.text and 'value="One-Click"' in page.text
    assert len(page.content) < 2000
    assert snapshot(db) == before  # GET alone never unsubscribes
    assert http.post(url, content=b"").status_code == 400  # not an RFC 8058 one-click
    assert snapshot(db) == before

    clock.advance(timedelta(minutes=3))
    resp = _one_click(http, url)
    assert resp.status_code == 200 and "no more emails" in resp.text
    alice, sam = _partner(db), _partner(db, "Sam")
    assert alice.email_opted_out_at == clock.now()
    assert alice.sms_consent is ConsentState.CONSENTED
    assert sam.email_opted_out_at is None
    after = snapshot(db)
    assert _one_click(http, url).status_code == 200  # a second click changes nothing
    assert snapshot(db) == after
    assert "already unsubscribed" in http.get(url).text

    clock.set(TONIGHT + timedelta(days=1))  # tomorrow: Alice gets her text, Sam his email
    outbox.messages.clear()
    d.run_once()
    assert [m.to for m in outbox.messages] == ["sam@example.org"]
    assert [m.to for m in texts.messages] == [ALICE, ALICE]


def test_a_tampered_unsubscribe_token_opts_nobody_out(
    db: Database,
    emailed: tuple[Dispatcher, Outbox, Outbox],
    http: httpx.Client,
    base: str,
) -> None:
    url = _unsubscribe_url(emailed[2], "alice@example.org", base)
    token = url.rsplit("/", 1)[1]
    tampered = {
        "last character": token[:-1] + ("A" if token[-1] != "A" else "B"),
        "truncated": token[:19],
        "another token": "x" * len(token),
        "NUL": token + "%00",
        "overlong": token * 12,
        "dot segments": "..%2F..%2Ftwilio%2Fstatus",
        "an id past 64 bits": "9999999999999999999" + token[token.index(".") :],
        "another generation": token.replace(".1.", ".2.", 1),
    }
    before = snapshot(db)
    for how, bad in tampered.items():
        for resp in (http.get(f"/unsubscribe/{bad}"), _one_click(http, f"/unsubscribe/{bad}")):
            assert resp.status_code == 404, f"{how}: {resp.status_code} {resp.text[:200]}"
            assert "Alice" not in resp.text, how
    assert snapshot(db) == before


def test_one_partners_link_unsubscribes_only_that_partner(
    db: Database, emailed: tuple[Dispatcher, Outbox, Outbox], http: httpx.Client, base: str
) -> None:
    url = _unsubscribe_url(emailed[2], "sam@example.org", base)
    assert _one_click(http, url).status_code == 200
    assert _partner(db, "Sam").email_opted_out_at is not None
    assert _partner(db).email_opted_out_at is None


def test_no_stored_body_or_export_holds_an_unsubscribe_link(
    db: Database, hearth: Hearth, emailed: tuple[Dispatcher, Outbox, Outbox]
) -> None:
    """The link is rendered at send time: the outbox keeps a reference, so an export (or a
    backup) of the couple hands neither partner the other's link."""
    tokens = {
        _unsubscribe_url(emailed[2], to, "").rsplit("/", 1)[1]
        for to in ("alice@example.org", "sam@example.org")
    }
    with db.session() as s:
        sent = sa.select(Reminder.body).where(
            Reminder.channel == "email", Reminder.body.is_not(None)
        )
        bodies = list(s.scalars(sent))
        exported = json.dumps(
            export_couple(s, couples.resolve(s, "Alice & Sam"), hearth.clock.now()), default=str
        )
    assert len(bodies) == 2
    assert all("Stop these emails: [unsubscribe link]" in (b or "") for b in bodies)
    stored = json.dumps(snapshot(db), default=str)
    for token in tokens:
        assert token not in stored and token not in exported


def test_a_new_address_ends_the_old_link_and_an_admin_can_resubscribe(
    db: Database,
    clock: FakeClock,
    run: Cli,
    emailed: tuple[Dispatcher, Outbox, Outbox],
    http: httpx.Client,
    base: str,
) -> None:
    old = _unsubscribe_url(emailed[2], "alice@example.org", base)
    run.ok("partner", "edit", "Alice", "--email", "alice.new@example.org")
    assert _one_click(http, old).status_code == 404  # the old address's link is dead
    assert _partner(db).email_opted_out_at is None
    refused = run("partner", "resubscribe", "Alice", "--source", "phone call")
    assert refused.exit_code == 2
    assert refused.output == "error: partner 'Alice' is not unsubscribed from email\n"
    d, _, outbox = emailed
    clock.set(TONIGHT + timedelta(days=1))
    outbox.messages.clear()
    d.run_once()
    new = _unsubscribe_url(outbox, "alice.new@example.org", base)
    assert new != old and _one_click(http, new).status_code == 200
    assert _partner(db).email_opted_out_at is not None
    assert run.ok("partner", "resubscribe", "Alice", "--source", "phone call").output == (
        "partner 1: Alice gets emails again\n"
    )
    alice = _partner(db)
    assert alice.email_opted_out_at is None
    history = json.loads(run.ok("partner", "show", "Alice", "--json").output)["consent_history"]
    assert [(h["channel"], h["state"], h["source"]) for h in history][-2:] == [
        ("email", "opted_out", "email unsubscribe"),
        ("email", "consented", "phone call"),
    ]


# -- fuzz ---------------------------------------------------------------------------------


@pytest.fixture
def fuzz_target(sqlite_db: Database, clock: FakeClock) -> Iterator[tuple[Database, str]]:
    """SQLite; Alice's text went out tonight as ``outbox-sms-1``. Yields (db, base URL)."""
    hearth = Hearth(settings=make_settings(sqlite_db, **_sections()), db=sqlite_db, clock=clock)
    _plan(hearth)
    clock.set(TONIGHT)
    _dispatcher(hearth, {ch: Outbox(ch) for ch in Channel}).run_once()
    with serve(hearth) as base:
        yield sqlite_db, base


# Header values as an HTTP client can send them: visible ASCII, no surrounding blanks.
_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    str.strip
)
_keys = st.sampled_from(
    ["From", "Body", "MessageSid", "MessageStatus", "ErrorCode", "To", "SmsSid", "AccountSid"]
) | st.text(max_size=8)
_values = st.sampled_from(
    [ALICE, "outbox-sms-1", "STOP", "delivered", "failed", "sent", "30003", ""]
) | st.text(max_size=60)
# A path and a form for it: random fields, or a realistic form (a reply from Alice, a receipt
# for her text) with a few fields changed, so that signed requests reach the handlers too.
_REALISTIC = {
    INBOUND: sms_from("STOP", sid="SM" + "1" * 32),
    STATUS: _receipt("outbox-sms-1", "delivered", "30003"),
}


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    path = draw(st.sampled_from([INBOUND, STATUS]))
    base = draw(st.sampled_from([_REALISTIC[path], _REALISTIC[path], {}]))
    return path, {**base, **draw(st.dictionaries(_keys, _values, max_size=3 if base else 8))}


_FORM = "application/x-www-form-urlencoded"
_content_types = st.one_of(
    st.just(_FORM),  # most requests get past the content type check...
    st.sampled_from(
        [
            f"{_FORM}; charset=utf-8",
            "Application/X-WWW-Form-Urlencoded",
            None,
            "application/json",
            "text/plain",
            "multipart/form-data; boundary=xx",
        ]
    ),
    _printable,
)
_header_names = st.from_regex(r"X-[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True).filter(
    lambda h: h.lower() != "x-twilio-signature"
)


@fuzz_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    call=_requests(),
    raw=st.one_of(st.none(), st.none(), st.binary(max_size=300)),  # mostly the form
    content_type=_content_types,
    signing=st.sampled_from(
        ["valid", "valid", "none", "random", "local url", "wrong token", "other path"]
    ),
    junk=_printable,
    extra=st.dictionaries(_header_names, _printable, max_size=3),
)
def test_fuzzed_webhooks_never_fail_and_change_nothing_unsigned(
    fuzz_target: tuple[Database, str],
    call: tuple[str, dict[str, str]],
    raw: bytes | None,
    content_type: str | None,
    signing: str,
    junk: str,
    extra: dict[str, str],
) -> None:
    db, base = fuzz_target
    path, params = call
    signature = {
        "valid": lambda: sign(path, params),
        "none": lambda: "",
        "random": lambda: junk,
        "local url": lambda: sign(path, params, base=base),
        "wrong token": lambda: sign(path, params, token="wrong"),
        "other path": lambda: sign(STATUS if path == INBOUND else INBOUND, params),
    }[signing]()
    headers = dict(extra)
    if signature:
        headers["X-Twilio-Signature"] = signature
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = raw if raw is not None else urllib.parse.urlencode(params).encode()
    before = snapshot(db)
    with httpx.Client(base_url=base, timeout=10) as http:
        resp = http.post(path, content=body, headers=headers)
    assert resp.status_code < 500, resp.text
    if signing != "valid":
        assert resp.status_code in (400, 403), resp.text
    if signing != "valid" or raw is not None:  # raw bytes: the signature covers other params
        assert snapshot(db) == before
