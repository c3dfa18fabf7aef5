"""Shared CLI plumbing: the service context, output as tables or JSON, dates and options."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from service.core.config import load_settings
from service.core.text import MAX_ID
from service.db.context import Hearth

F = TypeVar("F", bound=Callable[..., Any])

# A row id as the databases store it (64 bits): a longer number is refused in one line
# instead of overflowing in the driver.
ID = click.IntRange(0, MAX_ID)


@dataclass
class CliState:
    config_path: str | None = None
    hearth: Hearth | None = None


def hearth_from(ctx: click.Context) -> Hearth:
    """The service context: built once per invocation from the config (tests pass their own)."""
    root = ctx.find_root()
    obj = root.obj
    if isinstance(obj, Hearth):
        return obj
    if not isinstance(obj, CliState):
        obj = root.obj = CliState()
    if obj.hearth is None:
        obj.hearth = Hearth.from_settings(load_settings(obj.config_path))
    return obj.hearth


@contextmanager
def unit_of_work(ctx: click.Context | None = None) -> Iterator[tuple[Hearth, Session, datetime]]:
    """One transaction: everything in the block commits together or not at all."""
    hearth = hearth_from(ctx or click.get_current_context())
    with hearth.db.session(immediate=True) as session:
        yield hearth, session, hearth.clock.now()


@contextmanager
def read_only(ctx: click.Context | None = None) -> Iterator[tuple[Hearth, Session, datetime]]:
    """A transaction for commands that only read: on SQLite a plain (deferred) BEGIN, so it
    never takes the write lock the daemon and other commands need. Also the step before a
    confirmation prompt: nothing may be held open while a person decides."""
    hearth = hearth_from(ctx or click.get_current_context())
    with hearth.db.session() as session:
        yield hearth, session, hearth.clock.now()


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if hasattr(value, "value"):
        return value.value
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_default, indent=2, ensure_ascii=False))


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None
) -> None:
    if not rows:
        click.echo("(none)")
        return
    table = Table(title=title, show_edge=False, header_style="bold", pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    buffer = io.StringIO()
    Console(file=buffer, width=160, soft_wrap=False, color_system=None).print(table)
    click.echo(buffer.getvalue(), nl=False)


def print_fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        click.echo(f"{key.ljust(width)}  {'' if value is None else value}")


def fmt_local(instant: datetime | None, tz: str) -> str:
    from service.core.timeutil import zone

    if instant is None:
        return "-"
    return instant.astimezone(zone(tz)).strftime("%a %Y-%m-%d %H:%M %Z")


def confirm(question: str) -> None:
    """Ask ``question``; a "no" aborts. With nobody to answer (standard input closed or at its
    end, as in a script), one error line that says how to confirm, exit 2, instead of Click's
    bare "Aborted!"."""
    unanswered = click.UsageError("no answer on standard input (use --yes to confirm)")
    if sys.stdin is None or sys.stdin.closed:
        raise unanswered
    try:
        yes = click.confirm(question, default=False)
    except (click.Abort, RuntimeError):  # EOF; RuntimeError: "input(): lost sys.stdin"
        click.echo()  # end the prompt's line
        raise unanswered from None
    if not yes:
        raise click.Abort
