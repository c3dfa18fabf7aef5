"""The documents a user reads agree with the code."""

from __future__ import annotations

import re
from pathlib import Path

import click

from cli.docgen import render
from cli.main import cli


def test_cli_reference_is_generated_from_the_commands(repo_root: Path) -> None:
    current = (repo_root / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == render(), "docs/cli.md is stale: python -m cli.docgen > docs/cli.md"


def test_every_command_in_the_readme_tour_exists(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^hearth ([a-z-]+)(?: ([a-z-]+))?", readme, flags=re.M)
    assert len(commands) >= 8
    for name, sub in commands:
        cmd = cli.commands.get(name)
        assert cmd is not None, f"README uses unknown command hearth {name}"
        if isinstance(cmd, click.Group):
            assert sub in cmd.commands, f"README uses unknown command hearth {name} {sub}"
