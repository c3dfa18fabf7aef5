"""``hearth init`` and ``hearth db``: starter config and schema migrations."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.common import hearth_from
from service.core.crypto import ensure_key_file, parse_keys, read_key_file
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

[encryption]
# The key that encrypts what partners write (answers, replies), in a file of its own beside
# this one (mode 0600). Back it up with the database: stored answers cannot be read without it.
key_file = {key_file}
"""


@click.command("init")
@click.option("--path", default="hearth.toml", show_default=True, help="Where to write the file.")
@click.option("--force", is_flag=True, help="Overwrite an existing file (never the key file).")
@click.option(
    "--key-file",
    default="hearth.key",
    show_default=True,
    help="The encryption key's file, beside the config; made (mode 0600) unless it exists.",
)
def init_cmd(path: str, force: bool, key_file: str) -> None:
    """Write a starter hearth.toml and an encryption key file it points at."""
    target = Path(path)
    if not key_file.strip():
        raise InvalidInput("key-file", "must not be empty")
    key = target.parent / key_file
    try:
        if target.exists() and not force:
            raise InvalidInput("path", f"{cut(path)} already exists", "use --force to overwrite")
        made = ensure_key_file(key)
        if not made:
            _check_kept(key)
        # It may come to hold secrets: owner only.
        write_private(target, STARTER.format(key_file=json.dumps(key_file)))
    except OSError as exc:
        # A missing directory is the config's too: name what the admin typed.
        where = key if exc.filename == str(key) and key.parent.is_dir() else path
        raise InvalidInput("path", f"cannot write {cut(str(where))}: {exc.strerror}") from None
    except ValueError as exc:
        raise InvalidInput(
            "key-file", str(exc), "move it away or give another --key-file"
        ) from None
    kept = "wrote" if made else "kept the existing"
    click.echo(f"wrote {path}; {kept} encryption key {key}; next: hearth db upgrade")


def _check_kept(key: Path) -> None:
    """An existing key file is kept, so it must hold keys."""
    try:
        parse_keys(read_key_file(key))
    except InvalidInput as exc:
        raise ValueError(f"{key}: {exc.problem}") from None


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
