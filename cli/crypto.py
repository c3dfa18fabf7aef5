"""``hearth crypto``: the keys that encrypt what partners write, and re-encryption."""

from __future__ import annotations

import click

from cli.common import confirm, hearth_from, json_option, print_json, unit_of_work
from service.core.crypto import new_key
from service.db.sealed import reencrypt
from service.domain import unsubscribe


@click.group("crypto")
def crypto_group() -> None:
    """Encryption at rest of answers and replies ([encryption] keys), and the link key."""


@crypto_group.command("new-key")
def new_key_cmd() -> None:
    """Print a new Fernet key (put it first in encryption.keys to rotate)."""
    click.echo(new_key())


@crypto_group.command("reencrypt")
@json_option
def reencrypt_cmd(as_json: bool) -> None:
    """Encrypt every answer, reply, sealed message and kept feed token again under the first key
    (and any reply stored before encryption was set up). Run after putting a new key first;
    once it is done, the old keys can be dropped."""
    hearth = hearth_from(click.get_current_context())
    done = reencrypt(hearth.db, hearth.keys)
    if as_json:
        print_json(done)
    else:
        click.echo(", ".join(f"{n} {what} re-encrypted" for what, n in done.items()))


@crypto_group.command("rotate-link-key")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def rotate_link_key_cmd(yes: bool) -> None:
    """Replace the key that signs unsubscribe links: every link already sent stops working."""
    if not yes:
        confirm("Replace the unsubscribe link key? Every unsubscribe link sent so far stops.")
    with unit_of_work() as (_, session, _now):
        unsubscribe.rotate_key(session)
    click.echo("unsubscribe link key replaced; links sent before it no longer work")


def register(cli: click.Group) -> None:
    cli.add_command(crypto_group)
