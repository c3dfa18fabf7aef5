"""``hearth``: the admin CLI. Thin: it parses, calls ``service``, prints."""

from __future__ import annotations

import sys
from typing import Any

import click

from cli import (
    couple,
    daemon,
    data,
    db,
    deliveries,
    demo,
    feed,
    partner,
    prompts,
    repair,
    ritual,
    templates,
)
from cli.common import CliState
from service import __version__
from service.exceptions import HearthError


class HearthGroup(click.Group):
    """Turns expected failures into one line on stderr and the error's exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HearthError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=HearthGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="HEARTH_CONFIG",
    help="TOML config file (default: $HEARTH_CONFIG, else ./hearth.toml if present).",
)
@click.version_option(__version__, prog_name="hearth")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Hearth keeps a couple's relationship rituals alive: reminders by SMS and email,
    and a calendar feed each partner subscribes to."""
    if not isinstance(ctx.obj, CliState) and ctx.obj is None:
        ctx.obj = CliState(config_path=config_path)
    elif isinstance(ctx.obj, CliState) and config_path:
        ctx.obj.config_path = config_path


for module in (
    db, couple, partner, ritual, templates, feed, deliveries, prompts, repair, demo, daemon, data
):  # fmt: skip
    module.register(cli)


def main() -> None:
    sys.exit(cli.main(prog_name="hearth", standalone_mode=True))
