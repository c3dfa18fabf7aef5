"""The demo couple: what `make run` shows a new user, with no accounts anywhere.

It goes only into an empty database (a real one must not gain made-up partners with phone
numbers and rituals); each run adds a one-off "hello" whose nudge goes out soon. The hello
asks a light shared question, so a newcomer can answer as one partner, then the other, and
see the reveal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.core.exceptions import NotFound
from service.db.models import Couple, Partner, Prompt, PromptRotation, Ritual, RitualKind
from service.domain import couples, partners, prompts, rituals

DEMO = "Demo: Alex & Sam"
# The hello's question: light enough to answer as a stranger trying Hearth out.
LIGHT_QUESTION = "made_laugh_today"


@dataclass(frozen=True)
class Demo:
    couple: Couple
    created: bool  # False: the demo couple was there from an earlier run
    hello: Ritual  # the one-off whose nudge goes out ``nudge_in`` minutes from now
    start: datetime  # when the one-off starts (its nudge: a minute before)
    alex: Partner  # the partner whose feed URL the demo prints
    sam: Partner
    question: str | None  # what the hello asks both partners (None: an admin disabled it)


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
        description="A demo: answer its question as each partner; you each see the other's"
        " answer once both answered.",
        start=start,
        duration_minutes=5,
        offsets=[1],
    )
    hello.ask = True
    question = _ask_first(session, now, hello)
    alex, sam = (partners.resolve(session, n, couple) for n in ("Alex", "Sam"))
    return Demo(couple, created, hello, start, alex, sam, question)


def _ask_first(session: Session, now: datetime, ritual: Ritual) -> str | None:
    """Put the light question first in the ritual's rotation; its text, or None if an admin
    disabled it (the rotation then draws another, as for any ritual)."""
    prompts.sync_builtin(session, now)
    text = prompts.keyed_pool(RitualKind.CHECK_IN)[LIGHT_QUESTION]
    prompt = session.scalar(
        sa.select(Prompt).where(
            Prompt.kind == RitualKind.CHECK_IN, Prompt.text == text, Prompt.enabled
        )
    )
    if prompt is None:
        return None
    session.add(
        PromptRotation(
            ritual_id=ritual.id, remaining=[prompt.id], last_prompt_id=None, updated_at=now
        )
    )
    return prompt.text


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
