"""``hearth demo``: a demo couple so a new user sees Hearth work with no accounts."""

from __future__ import annotations

from datetime import timedelta

import click

from cli.common import fmt_local, unit_of_work
from service.calendar import feed_keep, feed_tokens
from service.domain import demo
from service.web.page import tokens as page_tokens

HINT = "open both links, answer tonight's question as each partner, and watch the reveal"
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
    """Demo couple: a nudge with a question due in a minute, both partners' page links and a
    feed URL; created only in an empty database.

    A database with couples of its own, none of them the demo, is left alone."""
    with unit_of_work() as (hearth, session, now):
        made = demo.ensure(session, now, hearth.settings.defaults.timezone, nudge_in)
        if made is None:
            click.echo(NOT_ADDED)
            return
        web = hearth.settings.web
        pages = {}
        for p in (made.alex, made.sam):
            # With keys a page link comes with a kept feed token: subscribe buttons at once.
            pages[p.name] = page_tokens.url(web, page_tokens.issue(session, now, p, hearth.keys))
        alex = made.alex
        kept = feed_keep.recover(alex, hearth.keys)
        feed = feed_tokens.urls(web, kept or feed_keep.issue(session, now, alex, hearth.keys))
        tz = made.couple.timezone
        when = fmt_local(made.start - timedelta(minutes=1), tz)
        name, hello_id, created = made.couple.name, made.hello.id, made.created
        question = made.question
    click.echo(f"{'created' if created else 'using'} demo couple {name!r}")
    click.echo(f"demo nudge (ritual {hello_id}) goes out at {when}, printed by the console channel")
    if question:
        click.echo(f"tonight's question for both: {question}")
    # Only the tokens' hashes are stored, so a link cannot be shown twice: each run issues
    # new ones.
    note = "" if created else " (new links; the ones printed by the last run no longer work)"
    click.echo(f"the partners' own pages{note}:")
    for who, url in pages.items():
        click.echo(f"  {who}: {url}")
    click.echo(f"Alex's calendar feed: {feed.https}")
    click.echo(f"    {feed.webcal}")
    click.echo(f"next: {HINT}")


def register(cli: click.Group) -> None:
    cli.add_command(demo_cmd)
