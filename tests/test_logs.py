"""Logs never carry a phone number, an email address, a token or a message body: on every
path (structlog lines, stdlib loggers, tracebacks, the HTTP access log, a failed send whose
provider error quotes the number), in both renderers."""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
import structlog
from twilio.request_validator import RequestValidator

from service.calendar import feed_tokens
from service.channels import build, build_one
from service.channels.base import Message, Receipt, Transport
from service.core.clock import FakeClock
from service.core.config import LogFormat, LogSettings
from service.core.logs import REDACTED, configure
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, Reminder
from service.domain import partners
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from tests.conftest import make_settings
from tests.factories import TONIGHT, add_ritual, couple_with_partners
from tests.peers.twilio_standin import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, TwilioStandIn
from tests.web import serve

PHONE = "+4915123456789"
EMAIL = "alice@example.org"
BODY = "I feel unheard when you scroll during dinner"
TOKEN = "q" * 20 + "Zx9_-" + "k" * 18  # 43 URL-safe characters, like a real feed token


@pytest.fixture(params=[LogFormat.JSON, LogFormat.CONSOLE])
def log_stream(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure(LogSettings(format=request.param, level="debug"), stream)
    try:
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()


def _clean(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked into the log:\n{text}"
    assert REDACTED in text


def test_every_kind_of_secret_by_key_and_in_free_text(log_stream: io.StringIO) -> None:
    log = structlog.get_logger("hearth.test")
    log.info("sent", reminder_id=7, couple_id=3, to=PHONE, email=EMAIL, body=BODY, token=TOKEN)
    log.warning("provider said", error=f"The 'To' number {PHONE} is not valid; cc {EMAIL}")
    log.info("url", path=f"/feeds/{TOKEN}.ics", unsub=f"https://x.org/unsubscribe/{TOKEN}")
    logging.getLogger("uvicorn.error").warning("peer %s wrote from %s", EMAIL, PHONE)
    try:
        raise RuntimeError(f"cannot reach {EMAIL} at {PHONE} with {TOKEN}")
    except RuntimeError:
        log.exception("send_crashed", reminder_id=7)
    text = log_stream.getvalue()
    _clean(text, PHONE, PHONE[1:], EMAIL, BODY, TOKEN)
    assert "reminder_id" in text and "couple_id" in text  # what operators need stays
    assert "send_crashed" in text and "RuntimeError" in text
    if text.lstrip().startswith("{"):
        assert all(json.loads(line) for line in text.splitlines())


def test_web_paths_and_a_failed_send(
    log_stream: io.StringIO,
    sqlite_db: Database,
    clock: FakeClock,
    twilio_standin: TwilioStandIn,
) -> None:
    now = clock.now()
    cid = couple_with_partners(sqlite_db, now)
    add_ritual(sqlite_db, now, cid, "five-minute-check-in")
    planner.plan(sqlite_db.write_engine, now, timedelta(hours=48), 30)
    public = "http://hearth.example.org"  # https with a console channel is refused
    hearth = Hearth(
        settings=make_settings(
            sqlite_db,
            channels={"sms": "twilio", "email": "console"},
            twilio={
                "account_sid": DEFAULT_ACCOUNT_SID,
                "auth_token": DEFAULT_AUTH_TOKEN,
                "from_number": "+15005550006",
                "api_base_url": twilio_standin.base_url,
            },
            web={"public_base_url": public},
        ),
        db=sqlite_db,
        clock=clock,
    )
    with sqlite_db.session() as s:
        token = feed_tokens.issue(s, now, partners.resolve(s, "Alice"))
    # A permanent failure whose provider message quotes the number, as Twilio's does.
    quoted = f"The 'To' number {PHONE} is not a valid phone number."
    twilio_standin.fail_to(PHONE, status=400, code=21211, message=quoted)
    clock.set(TONIGHT)
    d = Dispatcher(hearth, build(hearth.settings), rng=random.Random(3))
    assert d.run_once().failed == 1
    params = {"From": PHONE, "To": "+15005550006", "Body": BODY, "MessageSid": "SM" + "a" * 32}
    signature = RequestValidator(DEFAULT_AUTH_TOKEN).compute_signature(
        f"{public}/twilio/inbound", params
    )
    with serve(hearth) as base, httpx.Client(base_url=base) as http:
        assert http.get(f"/feeds/{token}.ics").status_code == 200
        assert http.get(f"/unsubscribe/{token}").status_code == 404
        for sep in ("%20", "%0A", "/"):  # malformed paths that split the token
            assert http.get(f"/feeds/{token[:21]}{sep}{token[21:]}.ics").status_code == 404
        signed = {"X-Twilio-Signature": signature}
        assert http.post("/twilio/inbound", data=params, headers=signed).status_code == 200
    text = log_stream.getvalue()
    _clean(text, PHONE, PHONE[1:], EMAIL, BODY, token, token[:21], token[21:])
    assert "reminder_failed" in text or "failed" in text
    assert "/feeds/" + REDACTED in text


def test_database_errors_and_echo_never_show_statement_parameters(
    log_stream: io.StringIO, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed statement's text quotes its parameters (a body, a number) unless the engine
    hides them; database.echo must go through the redacting pipeline, not around it."""
    log = structlog.get_logger("hearth.test")
    echoing = Database(db.url, echo=True)
    engine_log = logging.getLogger("sqlalchemy.engine")
    try:
        with echoing.engine.connect() as conn:
            conn.execute(sa.text("SELECT :body, :phone"), {"body": BODY, "phone": PHONE})
        try:
            with db.engine.connect() as conn:
                conn.execute(
                    sa.text("SELECT * FROM no_such_table WHERE a = :body AND b = :phone"),
                    {"body": BODY, "phone": PHONE},
                )
        except sa.exc.DBAPIError:
            log.exception("query_failed")
    finally:
        engine_log.setLevel(logging.NOTSET)
        echoing.dispose()
    text = log_stream.getvalue()
    for secret in (BODY, PHONE, PHONE[1:]):
        assert secret not in text, f"{secret!r} leaked into the log:\n{text}"
    assert "no_such_table" in text and "query_failed" in text  # the error itself is there
    assert "SELECT" in text.replace("query_failed", "")  # echo's lines came through the log
    out = capsys.readouterr()
    assert BODY not in out.out + out.err and "SELECT" not in out.out  # nothing around it


class _Unreachable(Transport):
    """An email server that makes the client library raise something unexpected."""

    channel = Channel.EMAIL

    def send(self, message: Message) -> Receipt:
        raise ConnectionResetError(f"mailbox {message.to} hung up")


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure(LogSettings(format=LogFormat.JSON, level="debug"), stream)
    try:
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()


def test_every_line_logged_while_sending_names_the_reminder_and_couple(
    json_lines: io.StringIO, db: Database, clock: FakeClock, twilio_standin: TwilioStandIn
) -> None:
    """Tonight's text goes out through the real twilio client (whose HTTP library logs too)
    and both emails crash the channel: every line of that pass carries both ids, and no
    number, address or message text."""
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "five-minute-check-in")
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)
    hearth = Hearth(
        settings=make_settings(
            db,
            channels={"sms": "twilio", "email": "console"},
            twilio={
                "account_sid": DEFAULT_ACCOUNT_SID,
                "auth_token": DEFAULT_AUTH_TOKEN,
                "from_number": "+15005550006",
                "api_base_url": twilio_standin.base_url,
            },
        ),
        db=db,
        clock=clock,
    )
    transports = {
        Channel.SMS: build_one(hearth.settings, Channel.SMS),
        Channel.EMAIL: _Unreachable(),
    }
    d = Dispatcher(hearth, transports, rng=random.Random(3))
    clock.set(TONIGHT)
    json_lines.seek(0)
    json_lines.truncate()
    try:
        tally = d.run_once()
    finally:
        d.close()
    assert (tally.sent, tally.retried) == (1, 2)
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    with db.session() as s:
        sent = {
            r.id: r.body for r in s.scalars(sa.select(Reminder).where(Reminder.body.is_not(None)))
        }
    assert {line["event"] for line in lines} >= {
        "reminder_sent",
        "channel_crashed",
        "reminder_retry",
    }
    assert any(not line["logger"].startswith("hearth") for line in lines), lines  # a library's
    for line in lines:
        assert line.get("couple_id") == cid, line
        assert line.get("reminder_id") in sent, line
        assert not line["logger"].startswith("twilio"), line  # its per-request chatter is off
    text = json_lines.getvalue()
    bodies = [b for b in sent.values() if b] + [r.body for r in twilio_standin.requests if r.body]
    for secret in (PHONE, PHONE[1:], EMAIL, "sam@example.org", *bodies):
        assert secret not in text, f"{secret!r} leaked into the log:\n{text}"


def test_nested_url_encoded_and_national_secrets(log_stream: io.StringIO) -> None:
    """Values inside dicts, lists and tuples are scrubbed too; so are URL-encoded numbers and
    addresses and numbers in national formats."""
    log = structlog.get_logger("hearth.test")
    log.info(
        "provider_answer",
        payload={"error": {"to": PHONE, "detail": f"cannot reach {EMAIL}"}, "ok": False},
        recipients=[PHONE, ("x", EMAIL)],
        form="To=%2B4915123456789&From=sam%40example.org",
        national="call (415) 555-0123 or 415.555.0199",
    )
    text = log_stream.getvalue()
    _clean(
        text,
        PHONE,
        PHONE[1:],
        EMAIL,
        "sam@example.org",
        "sam%40example.org",
        "%2B4915123456789",
        "555-0123",
        "555.0199",
    )
    assert "provider_answer" in text and "false" in text.lower()


def test_national_numbers_in_the_configured_region() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure(LogSettings(format=LogFormat.JSON), stream, phone_region="DE")
    try:
        structlog.get_logger("hearth.test").info("x", note="Handy 0151 23456789, 2026-12-03")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()
    text = stream.getvalue()
    _clean(text, "0151 23456789")
    assert "2026-12-03" in text  # a date is no number
