"""An install without an encryption key: what partners text still works, and they are told
the truth (issue 25 item 4: PAUSE by text answered HTTP 500 and the pause rolled back).

Through the real ``/twilio/inbound`` route over HTTP (signed as Twilio signs), on SQLite and
PostgreSQL; what reaches the other partner is counted at the Twilio stand-in and the SMTP
server, not in Hearth's rows.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from service.channels import build
from service.core.clock import FakeClock
from service.core.crypto import ensure_key_file
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Couple, Reminder, ReminderPurpose
from service.domain import couples, partners
from service.outbox import doctor, planner
from service.outbox.dispatcher import Dispatcher
from tests import peers
from tests.conftest import Cli, make_settings
from tests.factories import TONIGHT, add_ritual, couple_with_partners
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn
from tests.test_webhooks import ALICE, text
from tests.web import serve

BEN = "+4915123456780"
EVERYONE = "every partner gets every ritual's nudges"
# A day's pause from 21:01 in Berlin on Monday.
TOLD = (
    "Hearth: paused until Tue, Jan 6, 9:01 PM; we've told your partner. Reply RESUME to start"
    " again sooner."
)


@pytest.fixture
def keyless(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> Hearth:
    """As `hearth init` left an install before it wrote a key: no [encryption] keys."""
    sections = peers.sections(twilio_standin, smtp_sink)
    settings = make_settings(db, **sections, encryption={"keys": ""})
    assert not settings.encryption.keyring.configured
    return Hearth(settings=settings, db=db, clock=clock)


@pytest.fixture
def http(keyless: Hearth) -> Iterator[httpx.Client]:
    with serve(keyless) as base, httpx.Client(base_url=base, timeout=10) as client:
        yield client


def _texting_couple(db: Database, clock: FakeClock) -> None:
    """Alice and Ben, both on SMS with consent, in Berlin, with the nightly check-in."""
    now = clock.now()
    with db.session() as s:
        c = couples.add(s, now, name="Alice & Ben", timezone="Europe/Berlin")
        for name, phone in (("Alice", ALICE), ("Ben", BEN)):
            partners.add(
                s,
                now,
                c,
                name=name,
                phone=phone,
                email=None,
                timezone=None,
                channels="sms",
                quiet_hours=None,
                sms_consent="signup form",
            )
        cid = c.id
    add_ritual(db, now, cid, "five-minute-check-in")


def _send_due(hearth: Hearth) -> None:
    d = Dispatcher(hearth, build(hearth.settings), rng=random.Random(3))
    d.run_once()
    d.close()


def _paused(db: Database, clock: FakeClock) -> bool:
    with db.session() as s:
        return s.scalars(sa.select(Couple)).one().is_paused(clock.now())


def test_pause_resume_and_skip_by_text_without_a_key_hold_and_tell_the_other_partner(
    db: Database,
    clock: FakeClock,
    keyless: Hearth,
    http: httpx.Client,
    twilio_standin: TwilioStandIn,
) -> None:
    _texting_couple(db, clock)
    planner.plan(db.write_engine, clock.now(), timedelta(hours=48), 30)
    clock.set(TONIGHT)
    _send_due(keyless)  # tonight's 21:00 nudge, to both
    nudged = len(twilio_standin.sent)
    assert sorted(str(r.to) for r in twilio_standin.sent) == sorted([ALICE, BEN])

    clock.advance(timedelta(minutes=1))
    assert text(http, "SKIP") == [
        "Hearth: skipped, see you next time (Tue, Jan 6, 9:00 PM is off)."
    ]
    assert text(http, "PAUSE") == [TOLD]
    assert _paused(db, clock)  # the pause held: it was not rolled back
    assert text(http, "RESUME") == ["Hearth: welcome back, your rituals are on again."]
    assert not _paused(db, clock)
    _send_due(keyless)
    told = [(str(r.to), str(r.body)) for r in twilio_standin.sent[nudged:]]
    assert sorted(told) == [
        (
            BEN,
            "Hearth: Alice paused your rituals until Tue, Jan 6, 9:01 PM. Reply RESUME to start"
            " again sooner.",
        ),
        (BEN, "Hearth: Alice resumed your rituals."),
        (
            BEN,
            "Hearth: Alice skipped Five-minute check-in on Tue, Jan 6, 9:00 PM. See you next time.",
        ),
    ]  # once each, and nothing more to Alice: her answers were the TwiML


def test_pause_without_a_key_reaches_an_email_partner(
    db: Database, clock: FakeClock, keyless: Hearth, http: httpx.Client, smtp_sink: SmtpSink
) -> None:
    couple_with_partners(db, clock.now())  # Sam: email only
    assert text(http, "PAUSE 3D") == [
        "Hearth: paused until Thu, Jan 8, 1:00 PM; we've told your partner. Reply RESUME to"
        " start again sooner."
    ]
    _send_due(keyless)
    [mail] = smtp_sink.messages
    assert mail.rcpt_tos == ["sam@example.org"]
    assert "Alice paused your rituals until Thu, Jan 8, 1:00 PM" in mail.text()


def test_a_pause_nobody_can_be_told_of_says_so(
    db: Database,
    clock: FakeClock,
    keyless: Hearth,
    http: httpx.Client,
    twilio_standin: TwilioStandIn,
) -> None:
    _texting_couple(db, clock)
    assert text(http, "STOP", sender=BEN) == [
        "Hearth: you will get no more texts. Reply START to opt back in."
    ]
    assert text(http, "PAUSE") == [
        "Hearth: paused until Tue, Jan 6, 1:00 PM. We can't reach your partner, so please tell them"
        " yourself. Reply RESUME to start again sooner."
    ]
    assert _paused(db, clock)
    _send_due(keyless)
    assert twilio_standin.sent == []
    with db.session() as s:
        purposes = s.scalars(sa.select(Reminder.purpose)).all()
    assert ReminderPurpose.MESSAGE not in purposes


def test_doctor_says_when_no_key_is_set_and_only_then(
    db: Database, clock: FakeClock, keyless: Hearth, hearth: Hearth
) -> None:
    couple_with_partners(db, clock.now())
    out = Cli(keyless)("doctor")
    assert out.exit_code == 0  # every nudge still goes out: the exit status is about nudges
    assert out.output.splitlines()[:2] == [f"warning: {doctor.NO_KEY}", EVERYONE]
    as_json = Cli(keyless)("doctor", "--json")
    assert json.loads(as_json.stdout) == [] and doctor.NO_KEY in as_json.stderr
    keyed = Cli(hearth)("doctor")  # conftest's settings carry a key
    assert (keyed.exit_code, keyed.output.splitlines()[:1]) == (0, [EVERYONE])
    assert doctor.NO_KEY not in keyed.output


def test_doctor_warns_of_a_key_file_every_user_can_read(
    db: Database, clock: FakeClock, tmp_path: Path
) -> None:
    key = tmp_path / "hearth.key"
    ensure_key_file(key)
    hearth = Hearth(
        settings=make_settings(db, encryption={"key_file": str(key)}), db=db, clock=clock
    )
    assert Cli(hearth)("doctor").output.splitlines()[:1] == [EVERYONE]  # 0600, as written
    key.chmod(0o640)  # a service's own group may read it (docs/operations.md)
    assert Cli(hearth)("doctor").output.splitlines()[:1] == [EVERYONE]
    key.chmod(0o644)
    assert Cli(hearth)("doctor").output.splitlines()[:2] == [
        f"warning: the encryption key file {key} is readable by every user: chmod 600 it",
        EVERYONE,
    ]
