"""``hearth demo``: a demo couple so a new user sees Hearth work with no accounts."""

from __future__ import annotations

from datetime import datetime, timedelta

import click
import sqlalchemy as sa
from sqlalchemy.orm import Session

from cli.common import fmt_local, unit_of_work
from service.calendar import feed_tokens
from service.core.exceptions import NotFound
from service.db.models import Couple, RitualKind
from service.domain import couples, partners, rituals

DEMO = "Demo: Alex & Sam"
NOT_ADDED = "demo not added: this database already has couples (it goes only into an empty one)"


@click.command("demo")
@click.option(
    "--nudge-in",
    default=1,
    show_default=True,
    type=click.IntRange(1, 60),
    help="Minutes until the demo nudge goes out.",
)
def demo_cmd(nudge_in: int) -> None:
    """Demo couple: nudge due in a minute, new feed URL; created only in an empty database.

    A database with couples of its own, none of them the demo, is left alone."""
    with unit_of_work() as (hearth, session, now):
        try:
            couple = couples.resolve(session, DEMO)
            created = False
        except NotFound:
            if session.scalar(sa.select(sa.func.count()).select_from(Couple)):
                # `make run` calls this on whatever database is configured: a real one must
                # not gain made-up partners with phone numbers and rituals.
                click.echo(NOT_ADDED)
                return
            couple = _create(session, now, hearth.settings.defaults.timezone)
            created = True
        # A one-off "hello" starting a minute after its nudge: every run shows a nudge soon.
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
        alex = partners.resolve(session, "Alex", couple)
        token = feed_tokens.issue(session, now, alex)
        urls = feed_tokens.urls(hearth.settings.web, token)
        when = fmt_local(start - timedelta(minutes=1), couple.timezone)
        name, hello_id = couple.name, hello.id
    click.echo(f"{'created' if created else 'using'} demo couple {name!r}")
    click.echo(f"demo nudge (ritual {hello_id}) goes out at {when}, printed by the console channel")
    # Only the token's hash is stored, so a link cannot be shown twice: each run issues a new one.
    note = "" if created else " (new link; the one printed by the last run no longer works)"
    click.echo(f"Alex's calendar feed{note}: {urls.https}")
    click.echo(f"    {urls.webcal}")


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


def register(cli: click.Group) -> None:
    cli.add_command(demo_cmd)
