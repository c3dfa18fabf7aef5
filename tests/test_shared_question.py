"""The shared question over plain SMS, end to end: nudges through the real twilio client to
the stand-in, replies as signed Twilio webhooks over real HTTP, on SQLite and PostgreSQL.

Alice (SMS + email, Berlin) and Sam (SMS, New York) keep the nightly five-minute check-in,
which asks its prompt as the shared question by default. What each test asserts is what a
partner's phone receives (the stand-in's requests, the TwiML answers) and what is stored.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy import event

from service.channels import build_one
from service.core.clock import FakeClock
from service.core.config import LogFormat, LogSettings, load_settings
from service.core.crypto import new_key
from service.core.exceptions import ConfigError
from service.core.logs import configure
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import (
    Answer,
    Channel,
    CheckIn,
    ConsentState,
    Partner,
    Reminder,
    ReminderPurpose,
    ReminderState,
    Reply,
)
from service.domain import partners
from service.outbox import planner, retention
from service.outbox.dispatcher import Dispatcher
from service.replies import inbound, words
from service.replies.pausing import until
from service.replies.question import LATE_TEXT
from tests.conftest import TEST_KEY, Cli, make_settings
from tests.factories import TONIGHT, add_ritual, couple_with_partners
from tests.interleave import Statements, wait_until
from tests.peers.twilio_standin import TwilioStandIn
from tests.test_webhooks import ALICE, Outbox, _sections, text
from tests.web import serve

SAM = "+12125550123"
RIVER = "The walk by the river at dusk, holding hands"
DINNER = "Cooking dinner together and laughing about the burnt rice"


@pytest.fixture
def hearth(db: Database, clock: FakeClock, twilio_standin: TwilioStandIn) -> Hearth:
    """SMS through the real twilio client to the stand-in; both partners text, with full
    text (a discreet lock screen shows no question)."""
    h = Hearth(settings=make_settings(db, **_sections(twilio_standin)), db=db, clock=clock)
    now = clock.now()
    cid = couple_with_partners(db, now, sam_tz="America/New_York")
    with db.session() as s:
        sam = s.scalars(sa.select(Partner).where(Partner.name == "Sam")).one()
        partners.edit(s, now, sam, phone=SAM, channels="sms", sms_consent="signup form")
        for p in s.scalars(sa.select(Partner)):
            p.full_text = True
    add_ritual(db, now, cid, "five-minute-check-in")
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)
    return h


@pytest.fixture
def emails() -> Outbox:
    return Outbox(Channel.EMAIL)


@pytest.fixture
def dispatcher(hearth: Hearth, emails: Outbox) -> Dispatcher:
    transports = {Channel.SMS: build_one(hearth.settings, Channel.SMS), Channel.EMAIL: emails}
    return Dispatcher(hearth, transports, rng=random.Random(1))


@pytest.fixture
def http(hearth: Hearth) -> Iterator[httpx.Client]:
    with serve(hearth) as base, httpx.Client(base_url=base, timeout=10) as client:
        yield client


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[.*$\n?", re.M)


def _json(output: str) -> Any:
    """A command's JSON; the web server's thread may log a request line into the captured
    stdout meanwhile (it logs after the response went out)."""
    return json.loads(_LOG_LINE.sub("", output))


def _texts(standin: TwilioStandIn, to: str) -> list[str]:
    return [r.body or "" for r in standin.sent if r.to == to]


def _asked(clock: FakeClock, d: Dispatcher, standin: TwilioStandIn) -> None:
    clock.set(TONIGHT)
    assert d.run_once().sent == 3  # Alice: SMS and email; Sam: SMS
    for number in (ALICE, SAM):
        (nudge,) = _texts(standin, number)
        assert "Reply with your answer: you'll see your partner's once you both have." in nudge
    # Both are asked the same question (each at their own wall time).
    alice, sam = (_texts(standin, n)[0].split(". ", 1)[1] for n in (ALICE, SAM))
    assert alice == sam


def test_answers_are_revealed_to_each_only_once_both_answered(
    db: Database,
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
    emails: Outbox,
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    clock.advance(timedelta(minutes=5))
    assert "got your answer" in text(http, "The walk by the river", ALICE)[0]
    assert "changed your answer" in text(http, RIVER, ALICE)[0]  # until the reveal
    dispatcher.run_once()
    # Sam got nothing of Alice's answer (only the chase, which says nothing of it).
    assert not any("river" in t for t in _texts(twilio_standin, SAM))

    assert text(http, DINNER, SAM) == []  # the reveal comes through the outbox, to both
    dispatcher.run_once()
    assert _texts(twilio_standin, SAM)[-1] == f"Hearth: Alice's answer: {RIVER}"
    assert _texts(twilio_standin, ALICE)[-1] == f"Hearth: Sam's answer: {DINNER}"

    # Once: later answers change nothing and nothing more is revealed.
    assert "shared already" in text(http, "Actually, the rice", ALICE)[0]
    assert "shared already" in text(http, "and the river", SAM)[0]
    clock.advance(timedelta(minutes=5))
    dispatcher.run_once()
    assert sum("Alice's answer" in t for t in _texts(twilio_standin, SAM)) == 1
    assert sum("Sam's answer" in t for t in _texts(twilio_standin, ALICE)) == 1
    assert not any("rice" in m.text for m in emails.messages)  # short: no email needed
    with db.session() as s:
        # Answering counts as DONE for both.
        assert len(s.scalars(sa.select(CheckIn)).all()) == 2
        stored = s.scalars(sa.select(Answer.text)).all()
        bodies = s.scalars(sa.select(Reminder.body).where(Reminder.body.is_not(None))).all()
    assert [hearth.keys.open(t or "") for t in stored] == [RIVER, DINNER]
    assert not any("river" in (t or "") for t in [*stored, *bodies])  # sealed, also the reveal


def test_an_answer_reaches_the_other_partner_without_control_characters(
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    """A reply cannot be refused back like a title, so the controls a strict reader chokes on
    (issue 23: \x0b, \x0c, \x1c, U+0085, U+2028) become spaces before the reveal."""
    _asked(clock, dispatcher, twilio_standin)
    clock.advance(timedelta(minutes=5))
    text(http, "The walk\x0bby\x0cthe\x1criver\u0085at\u2028dusk", ALICE)
    text(http, DINNER, SAM)
    dispatcher.run_once()
    dispatcher.run_once()
    assert (
        _texts(twilio_standin, SAM)[-1] == "Hearth: Alice's answer: The walk by the river at dusk"
    )


def test_a_late_answer_is_not_revealed_and_says_so(
    db: Database,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    text(http, RIVER, ALICE)
    # Tonight's question closes when tomorrow's check-in starts.
    clock.set(TONIGHT + timedelta(days=1, seconds=30))
    assert text(http, DINNER, SAM) == [LATE_TEXT]
    dispatcher.run_once()  # tomorrow's nudges go; no answer with them
    for number in (ALICE, SAM):
        assert not any("'s answer:" in t for t in _texts(twilio_standin, number))
    with db.session() as s:
        rows = s.scalars(sa.select(Answer).order_by(Answer.id)).all()
    assert [(a.late, a.revealed_at) for a in rows] == [(False, None), (True, None)]


def test_stop_before_the_reveal_stops_the_reveal_to_that_partner(
    db: Database,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    text(http, RIVER, ALICE)
    text(http, "STOP", ALICE)
    text(http, DINNER, SAM)
    dispatcher.run_once()
    assert _texts(twilio_standin, SAM)[-1] == f"Hearth: Alice's answer: {RIVER}"
    assert len(_texts(twilio_standin, ALICE)) == 1  # the question; not Sam's answer


def test_stop_after_both_answered_stops_the_queued_reveal(
    db: Database,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    text(http, RIVER, ALICE)
    text(http, DINNER, SAM)  # both reveals queued
    text(http, "stop", ALICE)  # before they go out
    dispatcher.run_once()
    assert len(_texts(twilio_standin, ALICE)) == 1
    assert _texts(twilio_standin, SAM)[-1] == f"Hearth: Alice's answer: {RIVER}"
    with db.session() as s:
        states = s.execute(
            sa.select(Partner.name, Reminder.state)
            .join(Partner, Partner.id == Reminder.partner_id)
            .where(Reminder.purpose == ReminderPurpose.MESSAGE)
        ).all()
    assert sorted((n, st.value) for n, st in states) == [("Alice", "cancelled"), ("Sam", "sent")]


def test_a_long_answer_is_cut_to_two_segments_with_the_rest_by_email(
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
    emails: Outbox,
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    long = " ".join(["Cooking dinner together, burnt rice and all, and laughing."] * 8)
    text(http, long, SAM)
    text(http, RIVER, ALICE)
    dispatcher.run_once()
    to_alice = _texts(twilio_standin, ALICE)[-1]
    assert to_alice.startswith("Hearth: Sam's answer: Cooking dinner")
    assert to_alice.endswith("... (all of it in your email)")
    (req,) = [r for r in twilio_standin.sent if r.body == to_alice]
    assert req.params.get("Body") == to_alice and len(to_alice) <= 306
    (mail,) = [m for m in emails.messages if "Sam's answer" in m.text]
    assert long in mail.text and mail.to == "alice@example.org"


def test_mood_replies_show_in_couple_stats(
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    assert "mood 4 noted" in text(http, "4", ALICE)[0]
    assert "got your answer" in text(http, "2 long day, but you made it better", SAM)[0]
    out = _json(Cli(hearth).ok("couple", "stats", "Alice & Sam", "--json").output)
    (row,) = out
    assert row["mood"] == {
        "Alice": [{"week": "2026-01-05", "average": 4.0, "count": 1}],
        "Sam": [{"week": "2026-01-05", "average": 2.0, "count": 1}],
    }
    table = Cli(hearth).ok("couple", "stats", "Alice & Sam").output
    assert "mood by week, Five-minute check-in (oldest first, 1-5): Alice 4; Sam 2" in table


def test_pause_and_resume_by_text_tell_the_other_partner(
    db: Database,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    (answer,) = text(http, "Pause 3d", ALICE)
    assert answer.startswith("Hearth: paused until Thu, Jan 8, 9:00 PM")
    clock.advance(timedelta(minutes=1))
    dispatcher.run_once()  # the note goes out although the couple is paused
    assert _texts(twilio_standin, SAM)[-1] == (
        "Hearth: Alice paused your rituals until Thu, Jan 8, 3:00 PM. "
        "Reply RESUME to start again sooner."
    )
    clock.set(TONIGHT + timedelta(days=1))
    dispatcher.run_once()  # tomorrow's check-in is paused: no nudge
    assert len(_texts(twilio_standin, ALICE)) == 1 and len(_texts(twilio_standin, SAM)) == 2
    assert text(http, "RESUME", SAM) == ["Hearth: welcome back, your rituals are on again."]
    dispatcher.run_once()
    assert _texts(twilio_standin, ALICE)[-1] == "Hearth: Sam resumed your rituals."
    assert text(http, "resume", SAM) == ["Hearth: nothing is paused."]


def test_a_second_skip_changes_nothing_and_the_other_hears_once(
    db: Database,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    assert "skipped" in text(http, "SKIP", ALICE)[0]
    assert text(http, "skip", ALICE) == ["Hearth: that one is already skipped."]
    dispatcher.run_once()
    notes = [t for t in _texts(twilio_standin, SAM) if "skipped" in t]
    assert notes == [
        "Hearth: Alice skipped Five-minute check-in on Mon, Jan 5, 3:00 PM. See you next time."
    ]


def test_replies_read_without_case_accents_and_with_typo_hints(
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    assert text(http, "DOEN", ALICE) == ["Hearth: did you mean DONE? HELP lists every reply."]
    assert text(http, "dóne!", ALICE) == ["Hearth: lovely, Five-minute check-in marked done."]
    (helptext,) = text(http, "Hélp", SAM)
    assert len(helptext) <= 160 and all(
        w in helptext
        for w in ("DONE", "SKIP", "SNOOZE", "PAUSE", "RESUME", "REPAIR", "1-5", "STOP")
    )


# -- double opt-in ------------------------------------------------------------------------

NEW = "+4915199999999"


def test_double_opt_in_holds_back_every_text_until_yes(
    db: Database,
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    run = Cli(hearth)
    run.ok("couple", "add", "Kim & Lee", "--timezone", "Europe/Berlin")
    out = run.ok("partner", "add", "Kim & Lee", "Kim", "--phone", NEW).output
    assert "no other text goes to them until they reply YES" in out
    assert "pending YES" in run.ok("partner", "list", "--couple", "Kim & Lee").output
    run.ok("ritual", "add", "Kim & Lee", "--template", "five-minute-check-in")
    planner.plan(db.write_engine, clock.now(), timedelta(hours=48), 30)
    dispatcher.run_once()
    (confirm,) = _texts(twilio_standin, NEW)
    for part in (
        "Hearth",
        "Kim & Lee",
        "Msg frequency",
        "Msg&data rates may apply",
        "HELP",
        "STOP",
        "Reply YES to start",
    ):
        assert part in confirm
    clock.set(TONIGHT)
    dispatcher.run_once()
    assert len(_texts(twilio_standin, NEW)) == 1  # tonight's nudge held back
    assert text(http, "ok", NEW) == []  # nothing but the confirmation, until YES
    assert text(http, "Yes", NEW) == [inbound.JOINED_TEXT]
    with db.session() as s:
        kim = s.scalars(sa.select(Partner).where(Partner.name == "Kim")).one()
        assert (kim.sms_consent, kim.sms_consent_source) == (ConsentState.CONSENTED, "sms YES")
        assert kim.sms_consent_at == TONIGHT
    planner.plan(db.write_engine, clock.now(), timedelta(hours=48), 30)
    clock.set(TONIGHT + timedelta(days=1))
    dispatcher.run_once()
    assert "a moment for you two" in _texts(twilio_standin, NEW)[-1]  # Kim's discreet nudge


def test_a_number_that_said_stop_gets_nothing_at_all(
    db: Database,
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    run = Cli(hearth)
    run.ok("couple", "add", "Kim & Lee", "--timezone", "Europe/Berlin")
    run.ok("partner", "add", "Kim & Lee", "Kim", "--phone", NEW)
    text(http, "STOP", NEW)  # before the confirmation went out
    dispatcher.run_once()
    run.ok("partner", "add", "Kim & Lee", "Lee", "--phone", NEW)  # the same number again
    dispatcher.run_once()
    assert _texts(twilio_standin, NEW) == []
    assert "opted_out" in run.ok("partner", "list", "--couple", "Kim & Lee").output


# -- privacy ------------------------------------------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
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


def test_answers_are_unreadable_in_the_file_and_the_logs_and_in_the_export(
    db: Database,
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
    log_stream: io.StringIO,
    tmp_path: Path,
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    text(http, "love you, see you later", SAM)
    text(http, DINNER, SAM)  # changes his answer
    text(http, RIVER, ALICE)
    dispatcher.run_once()  # the reveals went out
    logged = log_stream.getvalue()
    assert "reply_handled" in logged and "reminder_sent" in logged
    for secret in ("river", "dinner", "love you"):
        assert secret not in logged.lower()
    if db.is_sqlite:
        main = Path(db.engine.url.database or "")
        # WAL mode: recent writes sit in the -wal file until a checkpoint; read both.
        raw = b"".join(p.read_bytes() for p in (main, Path(f"{main}-wal")) if p.exists())
        assert len(raw) > 10_000
        for word in (b"river", b"dinner", b"love you"):
            assert word not in raw.lower()
        backup = tmp_path / "backup.db"
        Cli(hearth).ok("backup", str(backup))
        assert b"river" not in backup.read_bytes().lower()
    data = _json(Cli(hearth).ok("export", "Alice & Sam").output)
    assert sorted(a["text"] for a in data["answers"]) == sorted([RIVER, DINNER])
    assert "love you, see you later" in [r["body"] for r in data["replies"]]


def test_couple_remove_deletes_answers(
    db: Database,
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    text(http, RIVER, ALICE)
    Cli(hearth).ok("couple", "remove", "Alice & Sam", "--yes")
    with db.session() as s:
        assert s.scalars(sa.select(Answer)).all() == []
        assert s.scalars(sa.select(Reply)).all() == []


def test_key_rotation_reencrypts_every_answer_and_reply(
    db: Database,
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    text(http, RIVER, ALICE)
    text(http, DINNER, SAM)
    fresh = new_key()
    sections = _sections(twilio_standin)
    rotating = Hearth(
        make_settings(db, **sections, encryption={"keys": f"{fresh},{TEST_KEY}"}), db, clock
    )
    out = _json(Cli(rotating).ok("crypto", "reencrypt", "--json").output)
    assert out["answers"] == 2 and out["replies"] == 2 and out["messages"] == 2
    assert _json(Cli(rotating).ok("crypto", "reencrypt", "--json").output) == {
        "replies": 0,
        "answers": 0,
        "messages": 0,
        "feeds": 0,
    }
    only_new = Hearth(make_settings(db, **sections, encryption={"keys": fresh}), db, clock)
    with db.session() as s:
        stored = s.scalars(sa.select(Answer.text).order_by(Answer.id)).all()
    assert [only_new.keys.open(t or "") for t in stored] == [RIVER, DINNER]
    assert hearth.keys.open(stored[0] or "").startswith("[unreadable")  # the old key alone


def test_a_reveal_is_queued_and_rendered_at_send_time_out_of_quiet_hours(
    db: Database,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    with db.session() as s:
        alice = s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one()
        partners.edit(s, clock.now(), alice, quiet_hours="21:30-07:00")
    clock.set(datetime(2026, 1, 5, 21, 0, tzinfo=UTC))  # 22:00 in Berlin
    text(http, RIVER, ALICE)
    text(http, DINNER, SAM)
    dispatcher.run_once()
    assert not any("'s answer:" in t for t in _texts(twilio_standin, ALICE))  # her night
    clock.set(datetime(2026, 1, 6, 6, 1, tzinfo=UTC))  # 07:01 in Berlin
    dispatcher.run_once()
    assert _texts(twilio_standin, ALICE)[-1] == f"Hearth: Sam's answer: {DINNER}"
    with db.session() as s:
        states = s.scalars(
            sa.select(Reminder.state).where(Reminder.purpose == ReminderPurpose.MESSAGE)
        ).all()
    assert sorted(st.value for st in states) == [ReminderState.SENT.value] * 2


# -- reading replies, without the peers ---------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "local_end"),
    [
        (None, "2026-01-06 13:00"),  # one day
        ("3D", "2026-01-08 13:00"),
        ("2 WEEKS", "2026-01-19 13:00"),
        ("UNTIL SUN", "2026-01-11 00:00"),  # Monday now: texts start again on Sunday
        ("UNTIL SUNDAY", "2026-01-11 00:00"),
        ("UNTIL MON", "2026-01-12 00:00"),  # today is Monday: next week's
        ("UNTIL 2026-01-20", "2026-01-20 00:00"),
        ("UNTIL 20 JAN", "2026-01-20 00:00"),
        ("UNTIL JAN 20", "2026-01-20 00:00"),
        ("UNTIL TOMORROW", "2026-01-06 00:00"),
    ],
)
def test_pause_lengths(arg: str | None, local_end: str) -> None:
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    end = until(arg, now, "Europe/Berlin")
    assert end is not None
    assert end.astimezone(ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%d %H:%M") == local_end


@pytest.mark.parametrize("arg", ["UNTIL NEVER", "FOREVER", "UNTIL 2026-02-30", "UNTIL 32 JAN"])
def test_unreadable_pauses(arg: str) -> None:
    assert until(arg, datetime(2026, 1, 5, 12, 0, tzinfo=UTC), "Europe/Berlin") is None


@pytest.mark.parametrize(
    ("body", "mood", "rest"),
    [
        ("4", 4, ""),
        ("4 long day but good", 4, "long day but good"),
        ("5!", 5, ""),
        ("3/5 ok", 3, "ok"),
        ("45 minutes late", None, "45 minutes late"),
        ("6", None, "6"),
        ("1.5 hours", None, "1.5 hours"),
        ("2, tired", 2, "tired"),
    ],
)
def test_mood_is_a_number_one_to_five_alone_or_first(
    body: str, mood: int | None, rest: str
) -> None:
    assert words.mood(body) == (mood, rest)


def test_without_a_key_no_words_are_kept_and_answers_are_not_taken(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn
) -> None:
    settings = make_settings(db, **_sections(twilio_standin), encryption={"keys": ""})
    keyless = Hearth(settings, db, clock)
    now = clock.now()
    cid = couple_with_partners(db, now)
    with db.session() as s:
        sam = s.scalars(sa.select(Partner).where(Partner.name == "Sam")).one()
        partners.edit(s, now, sam, phone=SAM, channels="sms", sms_consent="form")
    add_ritual(db, now, cid, "five-minute-check-in")
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)
    clock.set(TONIGHT)
    Dispatcher(
        keyless,
        {Channel.SMS: build_one(settings, Channel.SMS), Channel.EMAIL: Outbox(Channel.EMAIL)},
    ).run_once()
    with db.session(immediate=True) as s:
        alice = s.scalars(sa.select(Partner).where(Partner.name == "Alice")).one()
        answer = inbound.handle(keyless, s, clock.now(), alice, RIVER, "SM1")
    assert answer == inbound.GENTLE_TEXT
    with db.session() as s:
        assert s.scalars(sa.select(Reply.body)).all() == [""]
        assert s.scalars(sa.select(Answer)).all() == []


def test_ask_is_on_for_check_ins_and_can_be_turned_off(run: Cli, db: Database) -> None:
    run.ok("couple", "add", "Kim & Lee", "--timezone", "Europe/Berlin")
    on = json.loads(run.ok("ritual", "add", "Kim & Lee", "-t", "gratitude-three", "--json").output)
    off = json.loads(run.ok("ritual", "add", "Kim & Lee", "-t", "date-night", "--json").output)
    assert (on["ask"], off["ask"]) == (True, False)
    run.ok("ritual", "edit", str(on["id"]), "--no-ask")
    assert json.loads(run.ok("ritual", "show", str(on["id"]), "--json").output)["ask"] is False
    run.ok("ritual", "edit", str(off["id"]), "--ask")
    assert "shared question  on" in run.ok("ritual", "show", str(off["id"])).output


def test_the_keys_come_from_a_file_and_a_bad_one_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "keys"
    secret.write_text(f"{TEST_KEY}\n", encoding="utf-8")  # as Docker secrets hand it over
    settings = load_settings(None, environ={"HEARTH_ENCRYPTION_KEYS_FILE": str(secret)})
    keys = settings.encryption.keyring
    assert keys.configured and keys.open(keys.seal(RIVER)) == RIVER
    assert TEST_KEY not in repr(settings)  # a secret, never printed
    with pytest.raises(ConfigError) as err:
        load_settings(None, environ={"HEARTH_ENCRYPTION_KEYS": f"{TEST_KEY},not-a-key"})
    assert "encryption.keys" in str(err.value) and "key 2 is not a Fernet key" in str(err.value)
    assert "\n" not in str(err.value)


def test_retention_deletes_answers_with_the_replies(
    db: Database,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    text(http, RIVER, ALICE)
    text(http, "4", SAM)
    removed = retention.prune_in_chunks(db, clock.now() + timedelta(days=366), 365, rest=0)
    assert removed["answers"] == 2 and removed["replies"] == 2
    with db.session() as s:
        assert s.scalars(sa.select(Answer)).all() == []


def test_yes_and_no_are_answers_like_any_other_words(
    clock: FakeClock, dispatcher: Dispatcher, twilio_standin: TwilioStandIn, http: httpx.Client
) -> None:
    _asked(clock, dispatcher, twilio_standin)
    assert "got your answer" in text(http, "No", ALICE)[0]
    assert text(http, "Yes!", SAM) == []
    dispatcher.run_once()
    assert _texts(twilio_standin, SAM)[-1] == "Hearth: Alice's answer: No"
    assert _texts(twilio_standin, ALICE)[-1] == "Hearth: Sam's answer: Yes!"


def test_two_answers_arriving_together_are_revealed_to_each_once(
    db: Database,
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    twilio_standin: TwilioStandIn,
) -> None:
    """Both partners answer at the same moment: two webhooks in flight at once, each in its
    own transaction. Neither may miss the other's answer (issue 25, item 3: on PostgreSQL
    both were told to wait and nothing was ever revealed)."""
    _asked(clock, dispatcher, twilio_standin)
    clock.advance(timedelta(minutes=5))
    start = threading.Barrier(2)
    answers: dict[str, list[str]] = {}
    # A transaction that wrote an answer waits before it commits until the other is about
    # to commit too, or is blocked on a lock the first holds. Without such a lock both read
    # the answers before either commits, the interleaving that lost the reveal, made certain
    # rather than left to chance.
    cond, answering, committing = threading.Condition(), set(), set()

    def note_answer(statement: str) -> None:
        if statement.startswith("INSERT INTO answers"):
            with cond:
                answering.add(threading.get_ident())

    def meet_at_commit(_conn: Any) -> None:
        me = threading.get_ident()
        if me not in answering:
            return
        with cond:
            committing.add(me)
            cond.notify_all()
        wait_until(lambda: bool(committing - {me}) or meet.others_blocked_by(me), cond)

    meet = Statements(db, before=note_answer)
    event.listen(db.engine, "commit", meet_at_commit)

    def answer(number: str, body: str) -> None:
        with serve(hearth) as base, httpx.Client(base_url=base, timeout=30) as client:
            start.wait(timeout=30)
            answers[number] = text(client, body, number)

    threads = [
        threading.Thread(target=answer, args=(ALICE, RIVER)),
        threading.Thread(target=answer, args=(SAM, DINNER)),
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    meet.close()
    event.remove(db.engine, "commit", meet_at_commit)
    # One of them came second and saw both answers: it is told nothing (the reveal says it).
    assert sorted(len(a) for a in answers.values()) == [0, 1], answers
    dispatcher.run_once()
    assert [t for t in _texts(twilio_standin, SAM) if "'s answer:" in t] == [
        f"Hearth: Alice's answer: {RIVER}"
    ]
    assert [t for t in _texts(twilio_standin, ALICE) if "'s answer:" in t] == [
        f"Hearth: Sam's answer: {DINNER}"
    ]
    with db.session() as s:
        assert all(a.revealed_at is not None for a in s.scalars(sa.select(Answer)))
