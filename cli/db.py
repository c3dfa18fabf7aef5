"""``hearth init`` and ``hearth db``: starter config and schema migrations."""

from __future__ import annotations

from pathlib import Path

import click

from cli.common import hearth_from
from service.core.exceptions import InvalidInput
from service.core.files import write_private
from service.core.text import cut
from service.db import migrate
from service.db.engine import redact_url

STARTER = """\
# Hearth configuration. Every key, with its default, is documented in config.example.toml.
# Secrets are better given as environment variables: HEARTH_TWILIO_AUTH_TOKEN, HEARTH_SMTP_PASSWORD.

[database]
url = "sqlite:///hearth.db"

[web]
public_base_url = "http://127.0.0.1:8080"

[channels]
# "console" prints messages instead of sending them; switch to "twilio" / "smtp" when ready.
sms = "console"
email = "console"

[defaults]
phone_region = "US"
timezone = "UTC"
"""


@click.command("init")
@click.option("--path", default="hearth.toml", show_default=True, help="Where to write the file.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init_cmd(path: str, force: bool) -> None:
    """Write a starter hearth.toml."""
    target = Path(path)
    try:
        if target.exists() and not force:
            raise InvalidInput("path", f"{cut(path)} already exists", "use --force to overwrite")
        write_private(target, STARTER)  # it will hold secrets: owner only
    except OSError as exc:
        raise InvalidInput("path", f"cannot write {cut(path)}: {exc.strerror}") from None
    click.echo(f"wrote {path}; next: hearth db upgrade")


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.pass_context
def upgrade_cmd(ctx: click.Context, revision: str) -> None:
    """Apply migrations up to REVISION."""
    hearth = hearth_from(ctx)
    hearth.db.check()
    migrate.upgrade(hearth.db, revision)
    click.echo(f"database {redact_url(hearth.db.url)} at revision {migrate.current(hearth.db)}")


@db_group.command("current")
@click.pass_context
def current_cmd(ctx: click.Context) -> None:
    """Show the applied revision and whether it is the newest."""
    hearth = hearth_from(ctx)
    hearth.db.check()
    cur = migrate.current(hearth.db)
    state = "up to date" if cur == migrate.head() else f"behind (head is {migrate.head()})"
    click.echo(f"{cur or 'empty'}: {state}")


def register(cli: click.Group) -> None:
    cli.add_command(init_cmd)
    cli.add_command(db_group)
