"""``hearth prompts``: the prompt pools the nudges rotate through."""

from __future__ import annotations

import click

from cli.common import ID, json_option, print_json, print_table, unit_of_work
from service.db.models import RitualKind
from service.domain import prompts, validation

KINDS = [k.value for k in RitualKind]


@click.group("prompts")
def prompts_group() -> None:
    """Prompt pools: each ritual kind rotates through its own, no repeats until used up."""


@prompts_group.command("list")
@click.option("--kind", type=click.Choice(KINDS), help="Only this kind's pool.")
@click.option("--all", "show_all", is_flag=True, help="Include disabled prompts.")
@json_option
def list_cmd(kind: str | None, show_all: bool, as_json: bool) -> None:
    """List prompts."""
    with unit_of_work() as (_, session, now):
        prompts.sync_builtin(session, now)
        found = [
            p
            for p in prompts.list_(session, RitualKind(kind) if kind else None)
            if show_all or p.enabled
        ]
        data = [
            {"id": p.id, "kind": p.kind, "text": p.text, "builtin": p.builtin, "enabled": p.enabled}
            for p in found
        ]
    if as_json:
        print_json(data)
        return
    rows = [
        (
            d["id"],
            d["kind"],
            "built-in" if d["builtin"] else "added",
            "on" if d["enabled"] else "off",
            d["text"],
        )
        for d in data
    ]
    print_table(("id", "kind", "source", "state", "prompt"), rows)


@prompts_group.command("add")
@click.option("--kind", required=True, help="Ritual kind: " + ", ".join(KINDS) + ".")
@click.argument("text")
def add_cmd(kind: str, text: str) -> None:
    """Add TEXT to a kind's pool (at most 140 characters)."""
    with unit_of_work() as (_, session, now):
        prompts.sync_builtin(session, now)
        p = prompts.add(session, now, validation.kind(kind), text)
        click.echo(f"added prompt {p.id} to the {p.kind.value} pool")


@prompts_group.command("disable")
@click.argument("prompt_id", type=ID)
def disable_cmd(prompt_id: int) -> None:
    """Take a prompt out of rotation (built-in ones too)."""
    with unit_of_work() as (_, session, now):
        p = prompts.set_enabled(session, now, prompt_id, False)
        click.echo(f"disabled prompt {p.id}")


@prompts_group.command("enable")
@click.argument("prompt_id", type=ID)
def enable_cmd(prompt_id: int) -> None:
    """Put a disabled prompt back into rotation."""
    with unit_of_work() as (_, session, now):
        p = prompts.set_enabled(session, now, prompt_id, True)
        click.echo(f"enabled prompt {p.id}")


def register(cli: click.Group) -> None:
    cli.add_command(prompts_group)
