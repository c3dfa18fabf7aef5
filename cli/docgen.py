"""Write docs/cli.md from the commands' own help: ``python -m cli.docgen > docs/cli.md``.

The reference cannot drift from the code: a test regenerates it and compares.
"""

from __future__ import annotations

import click

from cli.main import cli

HEADER = """\
# CLI reference

`hearth` is the admin command. Every list/show command takes `--json` for scripts. Couples
and partners are named by id or by a unique name (`Couple/Partner` where names repeat).
Bad input prints one line naming what is wrong and exits with status 2, changing nothing;
operational failures (database unreachable, schema missing) exit with status 1.

This file is generated from the commands' help (`python -m cli.docgen > docs/cli.md`).
"""


def _walk(cmd: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            out.extend(_walk(cmd.commands[name], [*path, name]))
    return out


def render() -> str:
    parts = [HEADER]
    for path, cmd in _walk(cli, ["hearth"]):
        ctx = click.Context(
            cmd, info_name=" ".join(path), terminal_width=100, max_content_width=100
        )
        parts.append(f"\n## `{' '.join(path)}`\n\n```\n{cmd.get_help(ctx).rstrip()}\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    click.echo(render(), nl=False)
