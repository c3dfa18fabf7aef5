"""``hearth demo``: a demo couple so a new user sees Hearth work with no accounts."""

from __future__ import annotations

from datetime import timedelta

import click

from cli.common import fmt_local, unit_of_work
from service.calendar import feed_keep, feed_tokens
from service.domain import demo

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
        made = demo.ensure(session, now, hearth.settings.defaults.timezone, nudge_in)
        if made is None:
            click.echo(NOT_ADDED)
            return
        token = feed_tokens.issue(session, now, made.alex)
        feed_keep.keep(made.alex, token, hearth.keys)  # Alex's pages show it too
        urls = feed_tokens.urls(hearth.settings.web, token)
        tz = made.couple.timezone
        when = fmt_local(made.start - timedelta(minutes=1), tz)
        name, hello_id, created = made.couple.name, made.hello.id, made.created
    click.echo(f"{'created' if created else 'using'} demo couple {name!r}")
    click.echo(f"demo nudge (ritual {hello_id}) goes out at {when}, printed by the console channel")
    # Only the token's hash is stored, so a link cannot be shown twice: each run issues a new one.
    note = "" if created else " (new link; the one printed by the last run no longer works)"
    click.echo(f"Alex's calendar feed{note}: {urls.https}")
    click.echo(f"    {urls.webcal}")


def register(cli: click.Group) -> None:
    cli.add_command(demo_cmd)
