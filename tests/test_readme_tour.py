"""The README's tour, run verbatim right after what `make run` does, in a fresh directory.

`make run`'s own recipe (read from the Makefile) sets the directory up: a starter config with
its key, a fresh SQLite database, the demo couple. Then every command of the README's tour
block runs as written, in one bash session (the tour's `source` carries over), and each must
exit 0 and touch only the tour's couple: the demo couple's rows are the same before and after.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.db.models import Base

TOUR_HEADING = "## A 60-second tour"
MARK = "@@tour-rc"
# What is not run, and why; each must still be in the README (a stale reason fails).
NOT_RUN = {
    "exec $(BIN)/hearth serve": "make run's last step: the daemon runs until Ctrl-C; the tour"
    " runs beside it, and tests/test_daemon.py runs the daemon itself",
    "curl -s http://127.0.0.1:8080/metrics": "it reads make run's server on the fixed port 8080,"
    " which a test on this shared machine may not bind (tests bind ephemeral ports); /metrics"
    " and hearth_reminders_total are checked by tests/test_daemon.py",
}


def tour_commands(readme: str) -> list[str]:
    """The shell commands of the tour's ```sh block, continuation lines joined."""
    section = readme.split(TOUR_HEADING, 1)[1]
    block = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    commands: list[str] = []
    current = ""
    for line in block.splitlines():
        current += line
        if line.endswith("\\"):
            current += "\n"
            continue
        if current.strip():
            commands.append(current)
        current = ""
    return commands


def make_run_steps(makefile: str) -> list[str]:
    """The recipe lines of `make run`, with $(BIN) spelled out."""
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "no run target in the Makefile"
    lines = [line.strip() for line in recipe.group(1).splitlines()]
    return [line.replace("$(BIN)", ".venv/bin") if line else line for line in lines if line]


def _skipped(command: str) -> bool:
    spelled = command.replace(".venv/bin", "$(BIN)")
    return any(spelled.startswith(prefix) for prefix in NOT_RUN)


def _run_each(commands: list[str], cwd: Path, env: dict[str, str]) -> list[tuple[str, int, str]]:
    """Run the commands in one bash session; (command, exit status, its output) for each."""
    script = "".join(f'{c}\nprintf "\\n{MARK} %s\\n" "$?"\n' for c in commands)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    parts = re.split(rf"\n{MARK} (\d+)\n", "\n" + done.stdout)
    outputs, statuses = parts[0::2], [int(s) for s in parts[1::2]]
    assert len(statuses) == len(commands), f"the session stopped early:\n{done.stderr}"
    return [
        (c, rc, out + ("\n" + done.stderr if rc else ""))
        for c, rc, out in zip(commands, statuses, outputs, strict=False)
    ]


def _rows_of(db_file: Path, couple_name: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row that belongs to one couple: its own, its partners', its rituals' and any
    row naming one of them."""
    engine = sa.create_engine(f"sqlite:///{db_file}")
    out: dict[str, list[tuple[Any, ...]]] = {}
    try:
        with engine.connect() as conn:
            couple_id = conn.scalar(
                sa.text("SELECT id FROM couple WHERE name = :n"), {"n": couple_name}
            )
            assert couple_id is not None, couple_name
            people = conn.scalars(
                sa.text("SELECT id FROM partner WHERE couple_id = :c"), {"c": couple_id}
            ).all()
            rituals = conn.scalars(
                sa.text("SELECT id FROM ritual WHERE couple_id = :c"), {"c": couple_id}
            ).all()
            for table in Base.metadata.sorted_tables:
                cols = table.columns
                if table.name == "couple":
                    where = cols["id"] == couple_id
                elif "couple_id" in cols:
                    where = cols["couple_id"] == couple_id
                elif "partner_id" in cols:
                    where = cols["partner_id"].in_(people)
                elif "ritual_id" in cols:
                    where = cols["ritual_id"].in_(rituals)
                else:
                    continue  # shared rows (prompts, daemon state): no couple's own
                stmt = sa.select(table).where(where).order_by(*table.primary_key.columns)
                out[table.name] = [tuple(r) for r in conn.execute(stmt)]
    finally:
        engine.dispose()
    return out


def test_the_readme_tour_runs_verbatim_after_make_run_and_touches_only_its_couple(
    repo_root: Path, tmp_path: Path
) -> None:
    venv = Path(sys.prefix)
    assert (venv / "bin" / "activate").exists(), f"the tests run from a virtualenv, not {venv}"
    (tmp_path / ".venv").symlink_to(venv)  # what `make run` made, as the tour expects it
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HEARTH_")}
    env.pop("VIRTUAL_ENV", None)

    steps = make_run_steps((repo_root / "Makefile").read_text(encoding="utf-8"))
    setup = [s for s in steps if not _skipped(s)]
    assert len(setup) == len(steps) - 1, steps  # all but the daemon itself
    for command, rc, out in _run_each(setup, tmp_path, env):
        assert rc == 0, f"make run's {command!r} exited {rc}:\n{out}"
    assert (tmp_path / "hearth.key").stat().st_mode & 0o777 == 0o600
    demo = _rows_of(tmp_path / "hearth.db", "Demo: Alex & Sam")
    assert demo["partner"] and demo["ritual"]

    tour = tour_commands((repo_root / "README.md").read_text(encoding="utf-8"))
    for prefix in NOT_RUN:
        used = [c for c in steps + tour if c.replace(".venv/bin", "$(BIN)").startswith(prefix)]
        assert len(used) == 1, f"{prefix!r} is no longer run once by make run or the tour"
    ran = _run_each([c for c in tour if not _skipped(c)], tmp_path, env)
    for command, rc, out in ran:
        assert rc == 0, f"{command!r} exited {rc}:\n{out}"
    assert len(ran) == len(tour) - 1  # only the curl is not run

    # Only the tour's couple changed; what it did is there.
    assert _rows_of(tmp_path / "hearth.db", "Demo: Alex & Sam") == demo
    ours = _rows_of(tmp_path / "hearth.db", "Ana & Ben")
    assert len(ours["partner"]) == 2
    assert len(ours["occurrence_exception"]) == 1  # the date night skipped
    exported = json.loads((tmp_path / "ana-ben.json").read_text(encoding="utf-8"))
    assert exported["couple"]["name"] == "Ana & Ben"
    assert (tmp_path / "hearth-backup.db").stat().st_size > 0
