"""``hearth partner``: add, edit, remove, list, show (with consent history), link (their page)."""

from __future__ import annotations

import io
import shlex
from collections.abc import Callable
from typing import Any, TypeVar

import click
import segno

from cli import warnings
from cli.common import (
    confirm,
    fmt_local,
    json_option,
    print_fields,
    print_json,
    print_table,
    read_only,
    unit_of_work,
)
from service.core.exceptions import Conflict
from service.db.models import ConsentState, Partner
from service.domain import couples, partners, routing
from service.domain import unsubscribe as links
from service.web.page import tokens as page_tokens

F = TypeVar("F", bound=Callable[..., Any])


def partner_dict(p: Partner) -> dict[str, Any]:
    return {
        "id": p.id,
        "couple_id": p.couple_id,
        "couple": p.couple.name,
        "name": p.name,
        "phone": p.phone,
        "email": p.email,
        "timezone": p.timezone,
        "language": p.language,
        "channels": [str(c) for c in p.channel_list],
        "both_channels": p.both_channels,
        "route": routing.describe(p),
        "quiet_hours": partners.format_quiet(p),
        "sms_consent": p.sms_consent,
        "sms_consent_at": p.sms_consent_at,
        "sms_consent_source": p.sms_consent_source,
        "email_opted_out_at": p.email_opted_out_at,
        "full_text": p.full_text,
        "feed": "issued" if p.feed_token_hash else "none",
    }


def contact_options(f: F) -> F:
    """The options shared by ``add`` and ``edit``."""
    options = [
        click.option("--phone", help="Mobile number; national formats use defaults.phone_region."),
        click.option("--email", help="Email address."),
        click.option("--timezone", "-z", help="The partner's own IANA zone (default: couple's)."),
        click.option(
            "--language",
            help="What the partner reads Hearth in: en, de or es (default: defaults.language).",
        ),
        click.option(
            "--channels", help="Reminder channels in order, e.g. sms,email (default: contacts)."
        ),
        click.option("--quiet", "quiet_hours", help="Quiet hours like 22:00-07:30, or 'off'."),
        click.option(
            "--sms-consent",
            metavar="SOURCE",
            help="Record SMS consent now, with where it was given (e.g. 'signup form').",
        ),
        click.option(
            "--full-text/--discreet",
            default=None,
            help="Show full ritual text on lock screens, or keep it discreet (default).",
        ),
        click.option(
            "--both-channels/--one-channel",
            "both_channels",
            default=None,
            help="Every nudge on every channel, or one per moment by the first channel that "
            "can deliver it, the next only when it cannot (default).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@click.group("partner")
def partner_group() -> None:
    """Partners: contact details, zone, channels, quiet hours, consent."""


@partner_group.command("add")
@click.argument("couple")
@click.argument("name")
@contact_options
@json_option
def add_cmd(
    couple: str,
    name: str,
    as_json: bool,
    full_text: bool | None,
    both_channels: bool | None,
    **fields: Any,
) -> None:
    """Add partner NAME to COUPLE."""
    with unit_of_work() as (hearth, session, now):
        c = couples.resolve(session, couple)
        fields["language"] = fields.get("language") or hearth.settings.defaults.language
        p = partners.add(
            session,
            now,
            c,
            name=name,
            full_text=bool(full_text),
            both_channels=bool(both_channels),
            region=hearth.settings.defaults.phone_region,
            **fields,
        )
        data = partner_dict(p)
        notes = warnings.quiet(hearth, session, now, couple=c, partner_id=p.id)
    if as_json:
        print_json({**data, "warnings": [n.as_dict() for n in notes]})
    else:
        click.echo(
            f"added partner {data['id']}: {data['name']} to {data['couple']} "
            f"({', '.join(data['channels']) or 'no channels'})"
        )
        if data["sms_consent"] == ConsentState.PENDING:
            click.echo("sent a confirmation text; no other text goes to them until they reply YES")
        warnings.echo(notes)


@partner_group.command("edit")
@click.argument("partner")
@click.option("--name", help="New name.")
@contact_options
def edit_cmd(partner: str, **fields: Any) -> None:
    """Change PARTNER (id, name or Couple/Name). An empty --phone or --email clears it."""
    with unit_of_work() as (hearth, session, now):
        p = partners.resolve(session, partner)
        partners.edit(session, now, p, region=hearth.settings.defaults.phone_region, **fields)
        click.echo(f"updated partner {p.id}: {p.name}")
        warnings.echo(warnings.quiet(hearth, session, now, couple=p.couple, partner_id=p.id))


@partner_group.command("resubscribe")
@click.argument("partner")
@click.option(
    "--source",
    required=True,
    help="Where the partner asked for emails again (e.g. 'phone call 2026-12-03').",
)
def resubscribe_cmd(partner: str, source: str) -> None:
    """Send PARTNER reminder emails again after they unsubscribed (at their request)."""
    with unit_of_work() as (_, session, now):
        p = partners.resolve(session, partner)
        links.resubscribe(session, now, p, partners.consent_source(source, "source"))
        click.echo(f"partner {p.id}: {p.name} gets emails again")


@partner_group.command("remove")
@click.argument("partner")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def remove_cmd(partner: str, yes: bool) -> None:
    """Remove PARTNER and their personal data."""
    with read_only() as (_, session, _now):
        p = partners.resolve(session, partner)
        partner_id, question = p.id, f"Remove partner {p.name!r} of {p.couple.name!r}?"
    # Asked with no transaction open: an admin pondering the question must not hold the
    # write lock the daemon and every other command wait for.
    if not yes:
        confirm(question)
    with unit_of_work() as (hearth, session, now):
        p = partners.resolve(session, partner_id)  # by id: the partner the admin confirmed
        label = f"{p.id}: {p.name}"
        partners.remove(session, now, p)
    click.echo(f"removed partner {label}")
    hearth.db.erase_traces()


@partner_group.command("list")
@click.option("--couple", help="Only this couple (id or name).")
@json_option
def list_cmd(couple: str | None, as_json: bool) -> None:
    """List partners."""
    with read_only() as (_, session, _now):
        c = couples.resolve(session, couple) if couple else None
        data = [partner_dict(p) for p in partners.list_for(session, c)]
    if as_json:
        print_json(data)
        return
    rows = [
        (
            d["id"],
            d["couple"],
            d["name"],
            d["timezone"],
            ",".join(d["channels"]) or "-",
            d["quiet_hours"],
            "pending YES" if d["sms_consent"] == ConsentState.PENDING else d["sms_consent"],
        )
        for d in data
    ]
    print_table(("id", "couple", "name", "timezone", "channels", "quiet", "sms consent"), rows)


@partner_group.command("show")
@click.argument("partner")
@json_option
def show_cmd(partner: str, as_json: bool) -> None:
    """Show PARTNER with consent state and history."""
    with read_only() as (_, session, _now):
        p = partners.resolve(session, partner)
        data = partner_dict(p)
        history: list[dict[str, Any]] = [
            {"at": r.at, "channel": r.channel, "state": r.state, "source": r.source}
            for r in partners.consent_history(session, p)
        ]
        data["consent_history"] = history
        tz = p.timezone
    if as_json:
        print_json(data)
        return
    fields: list[tuple[str, Any]] = [
        ("id", data["id"]),
        ("couple", data["couple"]),
        ("name", data["name"]),
        ("phone", data["phone"] or "-"),
        ("email", data["email"] or "-"),
        ("timezone", tz),
        ("language", data["language"]),
        ("channels", ",".join(data["channels"]) or "-"),
        ("route", data["route"]),
        ("quiet hours", data["quiet_hours"]),
        ("text", "full" if data["full_text"] else "discreet"),
        ("sms consent", data["sms_consent"]),
        ("email", "opted out" if data["email_opted_out_at"] else "subscribed"),
        ("feed", data["feed"]),
    ]
    for h in history:
        fields.append(
            ("consent", f"{fmt_local(h['at'], tz)}  {h['channel']} {h['state']} ({h['source']})")
        )
    print_fields(fields)


@partner_group.command("link")
@click.argument("partner")
@click.option("--rotate", is_flag=True, help="Replace PARTNER's page link; the old one stops.")
@click.option("--qr/--no-qr", default=True, help="Also print a QR code to scan with a phone.")
@json_option
def link_cmd(partner: str, rotate: bool, qr: bool, as_json: bool) -> None:
    """Issue the link to PARTNER's own page (pause, quiet hours, calendar). Only its hash is
    stored, so it is shown once: a second link needs --rotate, which cuts off the first. A
    partner can also text LINK to get a new one."""
    with unit_of_work() as (hearth, session, now):
        p = partners.resolve(session, partner)
        if not rotate and p.page_token_hash is not None:
            raise Conflict(
                f"{p.name} already has a page link; it cannot be shown again (only its hash is"
                f" stored): use `hearth partner link {shlex.quote(partner)} --rotate`"
            )
        token = page_tokens.issue(session, now, p, hearth.keys)
        url = page_tokens.url(hearth.settings.web, token)
        name = p.name
    if as_json:
        print_json({"partner": name, "url": url})
        return
    click.echo(f"page for {name} (shown once; --rotate issues a new one):")
    click.echo(f"  {url}")
    if qr:
        out = io.StringIO()
        segno.make(url, error="m").terminal(out=out, compact=True)
        click.echo(out.getvalue(), nl=False)


def register(cli: click.Group) -> None:
    cli.add_command(partner_group)
