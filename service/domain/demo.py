"""The demo couple: what `make run` shows a new user, with no accounts anywhere.

It goes only into an empty database (a real one must not gain made-up partners with phone
numbers and rituals); each run adds a one-off "hello" whose nudge goes out soon.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.core.exceptions import NotFound
from service.db.models import Couple, Partner, Ritual, RitualKind
from service.domain import couples, partners, rituals

DEMO = "Demo: Alex & Sam"


@dataclass(frozen=True)
class Demo:
    couple: Couple
    created: bool  # False: the demo couple was there from an earlier run
    hello: Ritual  # the one-off whose nudge goes out ``nudge_in`` minutes from now
    start: datetime  # when the one-off starts (its nudge: a minute before)
    alex: Partner  # the partner whose feed URL the demo prints


def ensure(session: Session, now: datetime, tz: str, nudge_in: int) -> Demo | None:
    """The demo couple with a new "hello" one-off; None when the database has couples of
    its own (none of them the demo)."""
    try:
        couple = couples.resolve(session, DEMO)
        created = False
    except NotFound:
        if session.scalar(sa.select(sa.func.count()).select_from(Couple)):
            return None
        couple = _create(session, now, tz)
        created = True
    # A one-off starting a minute after its nudge: every run shows a nudge soon.
    start = (now + timedelta(minutes=nudge_in + 1)).replace(second=0, microsecond=0)
    hello = rituals.add_one_off(
        session,
        now,
        couple,
        kind=RitualKind.CHECK_IN,
        title="Hello from Hearth",
        description="A demo nudge: in real use, the rituals you define remind you here.",
        start=start,
        duration_minutes=5,
        offsets=[1],
    )
    return Demo(couple, created, hello, start, partners.resolve(session, "Alex", couple))


def _create(session: Session, now: datetime, tz: str) -> Couple:
    couple = couples.add(session, now, name=DEMO, timezone=tz)
    partners.add(
        session,
        now,
        couple,
        name="Alex",
        phone="+14155550123",
        email=None,
        timezone=None,
        channels="sms",
        quiet_hours=None,
        sms_consent="demo setup",
    )
    partners.add(
        session,
        now,
        couple,
        name="Sam",
        phone=None,
        email="sam@example.org",
        # Partners in two zones, so the console shows each nudge at its reader's local time.
        timezone="Europe/London" if tz == "America/New_York" else "America/New_York",
        channels="email",
        quiet_hours=None,
        sms_consent=None,
    )
    for template in ("five-minute-check-in", "gratitude-three", "date-night"):
        rituals.add(session, now, couple, rituals.RitualSpec(), template=template)
    return couple
