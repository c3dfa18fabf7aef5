"""``hearth repair``: calm repair conversations after a conflict.

Hearth is not therapy. Where there is a history of abuse, trauma or repeated betrayal, a
couples therapist is the right next step.
"""

from __future__ import annotations

from typing import Any

import click

from cli.common import ID, fmt_local, json_option, print_json, print_table, read_only, unit_of_work
from service.core.timeutil import localize, zone
from service.domain import couples, partners, validation
from service.replies import repair


@click.group("repair", epilog=repair.GUIDE.split("\n\n")[1])
def repair_group() -> None:
    """Repair conversations: a calm slot for both, a structured guide, a follow-up."""


@repair_group.command("request")
@click.argument("couple")
@click.option("--by", "by", help="The partner asking (id or name).")
@click.option(
    "--at",
    "at",
    help="Local time 'YYYY-MM-DD HH:MM' in the couple's zone; "
    "default: the first calm slot after the cooling-off gap.",
)
def request_cmd(couple: str, by: str | None, at: str | None) -> None:
    """Ask for a repair conversation for COUPLE; the daemon finds the slot and invites both."""
    with unit_of_work() as (_, session, now):
        c = couples.resolve(session, couple)
        who = partners.resolve(session, by, c) if by else None
        when = None
        if at:
            local = validation.local_datetime(at, "at")
            when = localize(local.date(), local.time(), zone(c.timezone))
        req = repair.request(session, now, c, who, "admin", at=when)
        click.echo(
            f"repair {req.id} requested for {c.name}"
            + (f" at {fmt_local(when, c.timezone)}" if when else "; the daemon picks a calm slot")
        )


@repair_group.command("list")
@click.option("--couple", help="Only this couple (id or name).")
@json_option
def list_cmd(couple: str | None, as_json: bool) -> None:
    """List repair requests, newest first."""
    with read_only() as (_, session, _now):
        found = repair.list_requests(session, couples.resolve(session, couple) if couple else None)
        tz = {c.id: c.timezone for c in couples.list_all(session)}
        data: list[dict[str, Any]] = [
            {
                "id": r.id,
                "couple_id": r.couple_id,
                "state": r.state,
                "requested_at": r.requested_at,
                "slot_start": r.slot_start,
                "source": r.source,
                "ritual_id": r.ritual_id,
            }
            for r in found
        ]
    if as_json:
        print_json(data)
        return
    rows = [
        (
            d["id"],
            d["couple_id"],
            d["state"],
            fmt_local(d["requested_at"], tz[d["couple_id"]]),
            fmt_local(d["slot_start"], tz[d["couple_id"]]),
            d["source"],
        )
        for d in data
    ]
    print_table(("id", "couple", "state", "requested", "slot", "source"), rows)


@repair_group.command("cancel")
@click.argument("repair_id", type=ID)
def cancel_cmd(repair_id: int) -> None:
    """Cancel a requested or scheduled repair conversation (its reminders and feed event)."""
    with unit_of_work() as (_, session, now):
        req = repair.cancel(session, now, repair.get(session, repair_id))
        click.echo(f"cancelled repair {req.id}")


def register(cli: click.Group) -> None:
    cli.add_command(repair_group)
