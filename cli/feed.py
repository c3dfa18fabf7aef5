"""``hearth feed``: each partner's calendar subscription."""

from __future__ import annotations

import io
from pathlib import Path

import click

from cli.common import print_json, read_only, unit_of_work
from service.calendar import feed_keep, feed_tokens, feeds
from service.core.exceptions import InvalidInput
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
    """Show PARTNER's feed URL, issuing their first. With encryption keys the URL is kept
    sealed, so it can be shown again (after `partner link` too); without, only its hash is
    stored and a second `url` refuses rather than cut off a live subscription (`rotate`
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
        # A kept feed token (service/calendar/feed_keep.py) is shown again, not replaced.
        token = None if rotate else feed_keep.recover(p, hearth.keys)
        if token is None:
            token = feed_keep.issue(session, now, p, hearth.keys, first=not rotate, ref=partner)
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
        body = feeds.build_calendar(
            c,
            feeds.feed_rituals(session, c),
            now=now,
            alarms=alarms,
            refresh_hours=hearth.settings.web.feed_refresh_hours,
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
