"""``hearth templates``: the ready-made rituals of RITUALS.md."""

from __future__ import annotations

import click

from cli.common import json_option, print_json, print_table
from service.domain.templates import TEMPLATES


@click.group("templates")
def templates_group() -> None:
    """Ready-made rituals to start from."""


@templates_group.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """List the templates `hearth ritual add --template NAME` accepts."""
    data = [
        {
            "name": t.name,
            "kind": t.kind,
            "title": t.title,
            "at": t.at.strftime("%H:%M") if t.at else None,
            "rrule": t.rrule,
            "duration_minutes": t.duration_minutes,
            "remind_minutes_before": list(t.offsets),
            "description": t.description,
        }
        for t in TEMPLATES.values()
    ]
    if as_json:
        print_json(data)
        return
    rows = [
        (
            d["name"],
            d["kind"],
            d["at"] or "all day",
            d["rrule"] or ("on request" if d["kind"] == "repair" else "give --on"),
            f"{d['duration_minutes']} min",
            d["description"],
        )
        for d in data
    ]
    print_table(("name", "kind", "at", "schedule", "length", "what for"), rows)


def register(cli: click.Group) -> None:
    cli.add_command(templates_group)
