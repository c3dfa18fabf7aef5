"""``hearth doctor``: who will not get which ritual's nudges, and why."""

from __future__ import annotations

from datetime import timedelta

import click

from cli.common import json_option, print_json, print_table, read_only
from service.domain import couples
from service.outbox import capacity, doctor


@click.command("doctor")
@click.option("--couple", help="Only this couple (id or name).")
@json_option
def doctor_cmd(couple: str | None, as_json: bool) -> None:
    """List every partner who will not get a ritual's nudges, and why (no channel reaches
    them, quiet hours, a number the provider refuses), with the route their nudges take; then
    the capacity forecast of the next 7 days in one line (`hearth capacity` has the detail).
    Exit status 1 when a partner misses nudges or a minute is over capacity. Also warns when
    no encryption key is set (partners' answers are then not kept)."""
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
        routes = doctor.routes(session, found)
        forecast = capacity.forecast(session.connection(), now, hearth.settings)
    problem = doctor.encryption_problem(hearth.settings.encryption)
    if problem is not None:
        # Not a finding (nudges still go out), so the exit status stays about nudges.
        click.echo(f"warning: {problem}", err=as_json)
    if as_json:
        print_json([{**f.as_dict(), "route": routes[f.partner_id, f.ritual_id]} for f in found])
    elif not found:
        click.echo("every partner gets every ritual's nudges")
    else:
        rows = [
            (f.couple, f.ritual, f.partner, routes[f.partner_id, f.ritual_id], f.reason)
            for f in found
        ]
        print_table(("couple", "ritual", "partner", "route", "why no nudge"), rows)
    if not as_json:
        click.echo(forecast.summary())
    if found or forecast.over():
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(doctor_cmd)
