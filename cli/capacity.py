"""``hearth capacity``: the busiest minutes of the coming days against each sender pool."""

from __future__ import annotations

import click

from cli.common import json_option, print_json, print_table, read_only
from service.outbox import capacity


@click.command("capacity")
@click.option(
    "--days",
    type=click.FloatRange(min=0.01, max=31),
    default=7.0,
    show_default=True,
    help="How far ahead to look.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1, max=100),
    default=capacity.TOP,
    show_default=True,
    help="Busiest minutes shown per sender pool.",
)
@json_option
def capacity_cmd(days: float, top: int, as_json: bool) -> None:
    """Forecast the busiest minutes of the next DAYS: nudges due per minute per sender pool
    against its capacity, when the last of them goes out, how many would expire. Exit status
    1 when a minute is over capacity (a nudge more than 60 s late, or expired)."""
    with read_only() as (hearth, session, now):
        f = capacity.forecast(session.connection(), now, hearth.settings, days, top)
    if as_json:
        print_json(f.as_dict())
    else:
        for name, pool in sorted(f.pools.items()):
            rows = [
                (
                    f"{p.minute:%a %Y-%m-%d %H:%M}",
                    p.due,
                    f"{p.capacity_per_minute:g}",
                    f"{p.latest:%H:%M:%S}",
                    f"{p.worst_late_seconds:.0f} s",
                    p.expired,
                )
                for p in pool.peaks
            ]
            title = (
                f"{name}: {pool.messages} due, {pool.rate_per_second:g}/s "
                f"({'leveled' if f.leveled else 'not leveled'}, up to "
                f"{pool.earliest_early_seconds:.0f} s early)"
            )
            print_table(
                ("minute (UTC)", "due", "capacity/min", "last out", "worst late", "expired"),
                rows,
                title=title,
            )
        click.echo(f.summary())
    if f.over():
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    cli.add_command(capacity_cmd)
