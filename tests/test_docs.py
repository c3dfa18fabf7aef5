"""The documents a user reads agree with the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from cli.docgen import render
from cli.main import cli


def test_cli_reference_is_generated_from_the_commands(repo_root: Path) -> None:
    current = (repo_root / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == render(), "docs/cli.md is stale: python -m cli.docgen > docs/cli.md"


def _readme_commands(readme: str) -> list[list[str]]:
    """Every ``hearth ...`` line of the README's shell blocks, continuation lines joined,
    split as the shell would (comments dropped)."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", readme, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["hearth"]:
                commands.append(words[1:])
    return commands


def _parse(args: list[str]) -> None:
    """Parse ``hearth ARGS`` exactly as a run would, without running it: Click raises a
    UsageError for an unknown command or option, a missing argument or a value of the
    wrong type."""
    cmd: click.Command = cli
    ctx = click.Context(cli, info_name="hearth")
    rest = list(args)
    while isinstance(cmd, click.Group):
        name = rest.pop(0) if rest else ""
        sub = cmd.commands.get(name)
        if sub is None:
            raise click.UsageError(f"no command {name!r} in {ctx.command_path}")
        cmd, ctx = sub, click.Context(sub, info_name=name, parent=ctx)
    assert ctx.parent is not None
    cmd.make_context(ctx.info_name, rest, parent=ctx.parent)


def test_every_command_in_the_readme_parses_against_the_real_commands(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    commands = _readme_commands(readme)
    assert len(commands) >= 14, commands  # the whole tour was found
    for args in commands:
        try:
            _parse(args)
        except click.UsageError as exc:
            raise AssertionError(f"README: hearth {shlex.join(args)}: {exc}") from None


@pytest.mark.parametrize(
    "args",
    [
        ["partner", "add", "A & S", "Sam", "--quiet-hours", "22:30-07:00"],  # the old drift
        ["ritual", "preview", "--count", "five"],
        ["couple", "add"],
        ["couple", "frobnicate"],
        ["feed"],
    ],
)
def test_the_readme_check_catches_drift(args: list[str]) -> None:
    with pytest.raises(click.UsageError):
        _parse(args)
