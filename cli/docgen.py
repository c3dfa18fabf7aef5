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


def _walk(cmd: click.Command, ctx: click.Context) -> list[click.Context]:
    # Each context has its parent so inherited settings (``-h``) apply as in a real run; click
    # caches a command's help option, so a parentless context would make the output depend on
    # what ran earlier in the process.
    out = [ctx]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            sub = cmd.commands[name]
            out.extend(_walk(sub, click.Context(sub, info_name=name, parent=ctx)))
    return out


def render() -> str:
    parts = [HEADER]
    root = click.Context(
        cli, info_name="hearth", terminal_width=100, max_content_width=100, **cli.context_settings
    )
    for ctx in _walk(cli, root):
        parts.append(
            f"\n## `{ctx.command_path}`\n\n```\n{ctx.command.get_help(ctx).rstrip()}\n```\n"
        )
    return "".join(parts)


if __name__ == "__main__":
    click.echo(render(), nl=False)
