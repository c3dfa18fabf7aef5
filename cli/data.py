"""``hearth export``, ``hearth prune``, ``hearth backup``: data care."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.common import hearth_from, json_option, print_json, read_only
from service.core.exceptions import InvalidInput
from service.core.files import write_private
from service.db import migrate
from service.domain import couples
from service.domain.export import export_couple
from service.outbox import retention


@click.command("export")
@click.argument("couple")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSON to this file instead of standard output.",
)
def export_cmd(couple: str, output: Path | None) -> None:
    """Everything stored about COUPLE, as JSON (secrets such as token hashes left out; what
    partners wrote, encrypted at rest, decrypted with the configured keys)."""
    with read_only() as (hearth, session, now):
        data = export_couple(session, couples.resolve(session, couple), now, hearth.keys)
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if output is None:
        click.echo(text)
    else:
        try:
            write_private(output, text + "\n")
        except OSError as exc:
            raise InvalidInput("--output", f"cannot write {output}: {exc.strerror}") from None
        click.echo(f"wrote {output}", err=True)


@click.command("prune")
@click.option(
    "--days",
    type=click.IntRange(1, 36500),
    help="Keep this many days (default: the retention.days setting).",
)
@json_option
@click.pass_context
def prune_cmd(ctx: click.Context, days: int | None, as_json: bool) -> None:
    """Delete finished reminders, replies and events older than the retention period.

    Reminders are first counted into the anonymous daily delivery counts."""
    hearth = hearth_from(ctx)
    migrate.require_current(hearth.db)
    removed = retention.prune(hearth, days)
    if as_json:
        print_json(removed)
    else:
        click.echo(", ".join(f"{n} {what}" for what, n in removed.items()) + " deleted")


@click.command("backup")
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def backup_cmd(ctx: click.Context, destination: Path) -> None:
    """Copy the SQLite database to DESTINATION while Hearth keeps running.

    PostgreSQL: use pg_dump (docs/operations.md)."""
    hearth = hearth_from(ctx)
    size = retention.backup_sqlite(hearth, destination)
    click.echo(f"backed up to {destination} ({size} bytes)")


def register(cli: click.Group) -> None:
    cli.add_command(export_cmd)
    cli.add_command(prune_cmd)
    cli.add_command(backup_cmd)
