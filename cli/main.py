"""``hearth``: the admin CLI. Thin: it parses, calls ``service``, prints."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click
import sqlalchemy as sa

from cli import (
    capacity,
    couple,
    crypto,
    daemon,
    data,
    db,
    deliveries,
    demo,
    doctor,
    feed,
    partner,
    prompts,
    repair,
    ritual,
    templates,
)
from cli.common import CliState
from service import __version__
from service.core.exceptions import HearthError


class HearthGroup(click.Group):
    """Turns expected failures into one line on stderr and the error's exit status.

    Click's own usage errors (a missing argument, an unknown option, a value of the wrong
    type) too: its Usage/Try/Error block would break the promise that bad input gets one
    line naming what is wrong, with exit status 2."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # The root's own options are parsed here, before invoke.
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:
            _fail(exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HearthError as exc:
            click.echo(one_line(f"error: {exc}"), err=True)
            ctx.exit(exc.exit_code)
        except sa.exc.SQLAlchemyError as exc:
            # A database failure no layer below knew to name: still one line, exit 1.
            orig = getattr(exc, "orig", None) or exc
            first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
            click.echo(one_line(f"error: database: {first}"), err=True)
            ctx.exit(1)
        except click.ClickException as exc:
            _fail(exc)


# Every error is one line under 300 characters, however long what it quotes.
LINE_LIMIT = 280


def one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= LINE_LIMIT else text[: LINE_LIMIT - 1] + "…"


def _fail(exc: click.ClickException) -> NoReturn:
    """One line for a Click error (exit 2 for usage errors, as Click has it)."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        raise exc  # a bare group prints its help: that is the answer, not an error
    where = ""
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        where = f"{exc.ctx.command_path}: "
    # Click may wrap long messages, and quotes the value it refused however long.
    click.echo(one_line(f"error: {where}{exc.format_message()}"), err=True)
    raise click.exceptions.Exit(exc.exit_code)


# Named, so usage lines and errors say `hearth` however it is invoked (tests, python -m cli).
@click.group("hearth", cls=HearthGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    db,
    couple,
    partner,
    ritual,
    templates,
    feed,
    deliveries,
    prompts,
    repair,
    demo,
    daemon,
    data,
    crypto,
    doctor,
    capacity,
):
    module.register(cli)


def main() -> None:
    sys.exit(cli.main(prog_name="hearth", standalone_mode=True))
