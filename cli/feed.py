"""``hearth feed``: each partner's calendar subscription."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import click
import sqlalchemy as sa

from cli.common import print_json, read_only, unit_of_work
from service.calendar import feed_tokens, feeds
from service.core.exceptions import Conflict, InvalidInput
from service.db.models import Ritual
from service.domain import couples, partners


@click.group("feed")
def feed_group() -> None:
    """Calendar feeds partners subscribe to (Google, Apple, Outlook)."""


def _show(partner_name: str, urls: feed_tokens.FeedUrls, qr: bool) -> None:
    click.echo(f"feed for {partner_name} (shown once; `hearth feed rotate` issues a new one):")
    click.echo(f"  {urls.https}")
    click.echo(f"  {urls.webcal}")
    if qr:
        import segno

        out = io.StringIO()
        segno.make(urls.webcal, error="m").terminal(out=out, compact=True)
        click.echo(out.getvalue(), nl=False)


@feed_group.command("url")
@click.argument("partner")
@click.option("--qr/--no-qr", default=True, help="Also print a QR code to scan with a phone.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def url_cmd(partner: str, qr: bool, as_json: bool) -> None:
    """Issue PARTNER's first feed URL. Only a hash of it is stored, so it is shown once: when
    PARTNER already has one this refuses rather than cut off a live subscription (`rotate`
    issues a new one)."""
    _issue(partner, qr, as_json, rotate=False)


@feed_group.command("rotate")
@click.argument("partner")
@click.option("--qr/--no-qr", default=False, help="Also print a QR code.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def rotate_cmd(partner: str, qr: bool, as_json: bool) -> None:
    """Revoke PARTNER's feed URL at once and issue a new one."""
    _issue(partner, qr, as_json, rotate=True)


def _issue(partner: str, qr: bool, as_json: bool, *, rotate: bool) -> None:
    with unit_of_work() as (hearth, session, now):
        p = partners.resolve(session, partner)
        if not rotate and p.feed_token_hash is not None:
            # The plain token was never stored, so "show the URL again" can only mean a new
            # token, which would break the subscription the partner already has.
            raise Conflict(
                f"{p.name} already has a feed URL; it cannot be shown again (only its hash is"
                f" stored): use `hearth feed rotate {shlex.quote(partner)}` to issue a new one"
            )
        token = feed_tokens.issue(session, now, p)
        urls = feed_tokens.urls(hearth.settings.web, token)
        name = p.name
    if as_json:
        print_json({"partner": name, "https": urls.https, "webcal": urls.webcal})
    else:
        _show(name, urls, qr)


@feed_group.command("export")
@click.argument("couple")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="File (default: stdout).")
@click.option("--alarms", is_flag=True, help="Include VALARMs for the reminder offsets.")
def export_cmd(couple: str, output: str | None, alarms: bool) -> None:
    """Write COUPLE's feed as an .ics file."""
    with read_only() as (hearth, session, now):
        c = couples.resolve(session, couple)
        rituals = list(
            session.scalars(sa.select(Ritual).where(Ritual.couple_id == c.id).order_by(Ritual.id))
        )
        body = feeds.build_calendar(
            c, rituals, now=now, alarms=alarms, refresh_hours=hearth.settings.web.feed_refresh_hours
        )
    if output:
        try:
            Path(output).write_bytes(body)
        except OSError as exc:
            raise InvalidInput("--output", f"cannot write {output}: {exc.strerror}") from None
        click.echo(f"wrote {output} ({len(body)} bytes)")
    else:
        click.echo(body, nl=False)


def register(cli: click.Group) -> None:
    cli.add_command(feed_group)
