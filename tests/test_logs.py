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
import structlog
from twilio.request_validator import RequestValidator

from service import feed_tokens, partners, planner
from service.app import Hearth
from service.channels import build
from service.clock import FakeClock
from service.config import LogFormat, LogSettings
from service.db import Database
from service.dispatcher import Dispatcher
from service.logs import REDACTED, configure
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
    public = "https://hearth.example.org"
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
        signed = {"X-Twilio-Signature": signature}
        assert http.post("/twilio/inbound", data=params, headers=signed).status_code == 200
    text = log_stream.getvalue()
    _clean(text, PHONE, PHONE[1:], EMAIL, BODY, token)
    assert "reminder_failed" in text or "failed" in text
    assert "/feeds/" + REDACTED in text
