"""One phone shared by partners of two couples (a person in two households, a family
phone): a reply goes to the couple that number last got a text for, not to whichever
partner an admin edited last (issue 25, item 8). Texts go through the real twilio client
to the stand-in; replies come back as signed webhooks over real HTTP."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from service.channels import build_one
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, CheckIn, Couple, Partner
from service.domain import couples, partners
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from tests.conftest import make_settings
from tests.factories import TONIGHT, add_ritual, couple_with_partners
from tests.peers.twilio_standin import TwilioStandIn
from tests.test_webhooks import ALICE, Outbox, _sections, text
from tests.web import serve


@pytest.fixture
def hearth(db: Database, clock: FakeClock, twilio_standin: TwilioStandIn) -> Hearth:
    """Alice texts from one number in two couples: with Sam (check-in 21:00 Berlin) and,
    as "Alice" too, with Kim (check-in 21:00 in New York, six hours later)."""
    h = Hearth(settings=make_settings(db, **_sections(twilio_standin)), db=db, clock=clock)
    now = clock.now()
    home = couple_with_partners(db, now)
    away = couple_with_partners(db, now, name="Alice & Kim", tz="America/New_York")
    for cid in (home, away):
        add_ritual(db, now, cid, "five-minute-check-in")
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)
    return h


@pytest.fixture
def http(hearth: Hearth) -> Iterator[httpx.Client]:
    with serve(hearth) as base, httpx.Client(base_url=base, timeout=10) as client:
        yield client


def _done_for(db: Database) -> list[str]:
    """The couples whose check-in Alice has marked done, in order."""
    with db.session() as s:
        return list(
            s.scalars(
                sa.select(Couple.name)
                .join(Partner, Partner.couple_id == Couple.id)
                .join(CheckIn, CheckIn.partner_id == Partner.id)
                .order_by(CheckIn.id)
            )
        )


def _touch_the_other_alice(db: Database, clock: FakeClock, couple: str) -> None:
    """An admin edit of the other couple's Alice (it moves her ``updated_at``)."""
    with db.session(immediate=True) as s:
        c = couples.resolve(s, couple)
        alice = next(p for p in c.partners if p.name == "Alice")
        partners.edit(s, clock.now(), alice, quiet_hours="")


def test_a_reply_goes_to_the_couple_the_number_last_got_a_text_for(
    db: Database,
    clock: FakeClock,
    hearth: Hearth,
    twilio_standin: TwilioStandIn,
    http: httpx.Client,
) -> None:
    sms = build_one(hearth.settings, Channel.SMS)
    d = Dispatcher(
        hearth, {Channel.SMS: sms, Channel.EMAIL: Outbox(Channel.EMAIL)}, rng=random.Random(6)
    )
    clock.set(TONIGHT)  # 21:00 in Berlin: the home check-in's text
    d.run_once()
    assert [r.to for r in twilio_standin.sent] == [ALICE]
    clock.advance(timedelta(minutes=5))
    _touch_the_other_alice(db, clock, "Alice & Kim")
    assert "marked done" in text(http, "DONE", ALICE)[0]
    assert _done_for(db) == ["Alice & Sam"]

    clock.set(TONIGHT + timedelta(hours=6))  # 21:00 in New York: the away check-in's text
    d.run_once()
    assert [r.to for r in twilio_standin.sent] == [ALICE, ALICE]
    clock.advance(timedelta(minutes=5))
    _touch_the_other_alice(db, clock, "Alice & Sam")
    assert "marked done" in text(http, "DONE", ALICE)[0]
    assert _done_for(db) == ["Alice & Sam", "Alice & Kim"]
    d.close()
