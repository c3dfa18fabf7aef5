"""``hearth doctor``: who will not get which ritual's nudges, and why."""

from __future__ import annotations

from datetime import timedelta

import click

from cli.common import json_option, print_json, print_table, read_only
from service.domain import couples
from service.outbox import doctor


@click.command("doctor")
@click.option("--couple", help="Only this couple (id or name).")
@json_option
def doctor_cmd(couple: str | None, as_json: bool) -> None:
    """List every partner who will not get a ritual's nudges, and why (no channel reaches
    them, quiet hours, a number the provider refuses). Exit status 1 when there is one. Also
    warns when no encryption key is set (partners' answers are then not kept)."""
    with read_only() as (hearth, session, now):
        c = couples.resolve(session, couple) if couple else None
        cfg = hearth.settings.daemon
        found = doctor.findings(
            session,
            now,
            early=timedelta(hours=cfg.quiet_early_hours),
            stale_minutes=cfg.stale_after_minutes,
            couple=c,
        )
    problem = doctor.encryption_problem(hearth.settings.encryption)
    if problem is not None:
        # Not a finding (nudges still go out), so the exit status stays about nudges.
        click.echo(f"warning: {problem}", err=as_json)
    if as_json:
        print_json([f.as_dict() for f in found])
    elif not found:
        click.echo("every partner gets every ritual's nudges")
    else:
        rows = [(f.couple, f.ritual, f.partner, f.reason) for f in found]
        print_table(("couple", "ritual", "partner", "why no nudge"), rows)
    if found:
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(doctor_cmd)
