"""Test data made through the service layer, as the CLI would make it."""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, Couple, Ritual, RitualKind
from service.domain import couples, partners, rituals
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher

TONIGHT = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)  # 21:00 in Berlin, the check-in


def couple_with_partners(
    db: Database,
    now: datetime,
    *,
    name: str = "Alice & Sam",
    tz: str = "Europe/Berlin",
    sam_tz: str | None = None,
    sms_consent: bool = True,
    alice_both: bool = True,
) -> int:
    """A couple: Alice (SMS with consent + email) and Sam (email only). Returns the id.
    ``alice_both``: Alice asked for every nudge on both channels (most tests count both);
    False: one nudge per moment, her email a standby behind her SMS."""
    with db.session() as s:
        c = couples.add(s, now, name=name, timezone=tz)
        partners.add(
            s,
            now,
            c,
            name="Alice",
            phone="+4915123456789",
            email="alice@example.org",
            timezone=None,
            channels="sms,email",
            quiet_hours=None,
            sms_consent="signup form" if sms_consent else None,
            both_channels=alice_both,
        )
        partners.add(
            s,
            now,
            c,
            name="Sam",
            phone=None,
            email="sam@example.org",
            timezone=sam_tz,
            channels="email",
            quiet_hours=None,
            sms_consent=None,
        )
        return c.id


def add_ritual(
    db: Database, now: datetime, couple_id: int, template: str | None = None, **spec: str
) -> int:
    with db.session() as s:
        c = s.get(Couple, couple_id)
        assert c is not None
        r: Ritual = rituals.add(s, now, c, rituals.RitualSpec(**spec), template=template)
        return r.id


def sms_one_offs(
    db: Database,
    now: datetime,
    starts: Sequence[datetime],
    *,
    title: str = "Burst",
    phone: str | None = None,
) -> list[str]:
    """One couple per start, "<title> <i>", with one partner, Alex, on SMS and a one-off
    nudged at that start. Each Alex has a number of their own unless ``phone`` is given for
    all. Returns the numbers, in order."""
    numbers = [phone or f"+1415555{i:04d}" for i in range(len(starts))]
    with db.session() as s:
        for i, (start, number) in enumerate(zip(starts, numbers, strict=True)):
            c = couples.add(s, now, name=f"{title} {i}", timezone="Europe/Berlin")
            partners.add(
                s,
                now,
                c,
                name="Alex",
                phone=number,
                email=None,
                timezone=None,
                channels="sms",
                quiet_hours=None,
                sms_consent="test",
            )
            rituals.add_one_off(
                s,
                now,
                c,
                kind=RitualKind.CHECK_IN,
                title=title,
                description="",
                start=start,
                duration_minutes=60,
                offsets=[0],
            )
    return numbers


def check_in_sent(hearth: Hearth) -> Dispatcher:
    """Alice and Sam with a nightly check-in whose 21:00 nudges (Alice: SMS and email, Sam:
    email) have just gone out through console transports; the clock is a minute past."""
    now = hearth.clock.now()
    cid = couple_with_partners(hearth.db, now)
    add_ritual(hearth.db, now, cid, "five-minute-check-in")
    planner.plan(hearth.db.write_engine, now, timedelta(hours=48), 30)
    d = Dispatcher(
        hearth, {ch: ConsoleTransport(ch, io.StringIO()) for ch in Channel}, rng=random.Random(1)
    )
    assert isinstance(hearth.clock, FakeClock)
    hearth.clock.set(TONIGHT + timedelta(minutes=1))
    assert d.run_once().sent == 3
    return d
