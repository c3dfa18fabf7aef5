"""The promise for bad input, held everywhere: every command with hostile values for every
argument and option, every config key with bad values from a file and from the environment,
and each case a careless or hostile user found (issue 15).

A refused invocation exits 2 (1 for an operational failure), prints exactly one line on
stderr, under 300 characters and without a traceback, and leaves the database as it was:
byte for byte on SQLite (a hash of its dump), by row counts and a checksum of every row on
PostgreSQL. An accepted one prints no traceback either. Bounded: a fixed list of values per
parameter plus a few hypothesis draws, well under a minute per backend.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from cli.main import cli
from service.core.config import SECTIONS, Settings
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Base
from tests.conftest import Cli
from tests.factories import add_ritual, couple_with_partners

LINE_LIMIT = 300

# What a careless or hostile user types, for any parameter. (No NUL: no process can be
# given one in its arguments; config values with one are fuzzed below.)
HOSTILE = [
    "",
    " ",
    "x" * 10_000,
    "9" * 23,
    "-1",
    "Europe",
    "America/Argentina",
    "/etc/localtime",
    "ÄBC",
    "a\u0308bc",
    "\n",
    "🙂",
    "%2B4915123456789",
    "inf",
    "true",
    "++4915123456789",
    "1.5",
    "9999-99-99",
    "999999999d",
    "FREQ=DAILY;COUNT=abc",
    "../../etc/passwd",
    "'; DROP TABLE couple; --",
]
# Valid stand-ins for the parameters a case does not fuzz.
VALID = {
    "couple": "Alice & Sam",
    "partner": "Alice",
    "ritual": "1",
    "name": "Newname",
    "date": "2026-01-06",
    "reminder_id": "1",
    "prompt_id": "1",
    "repair_id": "1",
    "text": "A new prompt",
    "destination": "copy.db",
    "timezone": "UTC",
    "source": "phone",
    "to": "2026-01-07 21:00",
    "kind": "custom",
    "channel": "email",
}
# Long-running commands are fuzzed through their concrete cases only (a valid host and
# port would start a server).
SKIP = {("serve",), ("worker",), ("web",)}


def _commands(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = [(path, cmd) for path, cmd in _commands(cli) if path not in SKIP]
CASES = [
    (path, param.name)
    for path, cmd in COMMANDS
    for param in cmd.params
    if param.name and not getattr(param, "is_flag", False) and param.name != "help"
]


def argv(path: tuple[str, ...], command: click.Command, bad: str | None, value: str) -> list[str]:
    """``hearth PATH`` with every required parameter given a valid value, and ``bad`` (a
    parameter's name) given ``value``."""
    args: list[str] = list(path)
    for param in command.params:
        if param.name is None or param.name == "help":
            continue
        given = value if param.name == bad else VALID.get(param.name)
        if isinstance(param, click.Argument):
            if param.name == bad or param.required:
                args.append(given or "x")
        elif param.name == bad or (param.required and not getattr(param, "is_flag", False)):
            args += [
                param.opts[-1] if param.opts[-1].startswith("--") else param.opts[0],
                given or "x",
            ]
        elif param.name == "yes":
            args.append("--yes")
    return args


def fingerprint(db: Database) -> str:
    """The database's content: SQLite's dump, hashed; on PostgreSQL each table's row count
    and an md5 over its rows in a fixed order."""
    if db.is_sqlite:
        path = sa.engine.make_url(db.url).database
        assert path
        raw = sqlite3.connect(path)
        try:
            return hashlib.sha256("\n".join(raw.iterdump()).encode()).hexdigest()
        finally:
            raw.close()
    parts = []
    with db.engine.connect() as conn:
        for table in sorted(Base.metadata.tables):
            rows = "coalesce(string_agg(t::text, ',' ORDER BY t::text), '')"
            query = f'SELECT count(*), md5({rows}) FROM "{table}" t'
            row = conn.execute(sa.text(query)).one()
            parts.append(f"{table}:{row[0]}:{row[1]}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


@dataclass
class Outcome:
    result: Result
    changed: bool


def check(run: Cli, db: Database, args: list[str], input: str | None = None) -> Outcome:
    """Run ``hearth ARGS`` and assert the promise; returns what happened."""
    before = fingerprint(db)
    result = run.runner.invoke(cli, args, obj=run.hearth, input=input)
    after = fingerprint(db)
    shown = f"hearth {' '.join(a[:40] for a in args)!r}"
    assert "Traceback" not in result.output, f"{shown}: {result.output[-2000:]}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{shown} raised {result.exception!r}") from result.exception
    if result.exit_code != 0:
        assert result.exit_code in (1, 2), f"{shown}: exit {result.exit_code}"
        lines = result.stderr.splitlines()
        assert len(lines) == 1, f"{shown}: {len(lines)} lines on stderr: {lines[:5]}"
        assert len(lines[0]) < LINE_LIMIT, f"{shown}: a line of {len(lines[0])} characters"
        assert after == before, f"{shown}: refused, yet the database changed"
    return Outcome(result, after != before)


@pytest.fixture
def world(hearth: Hearth, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Alice & Sam with a check-in (ritual 1); files land in tmp_path."""
    monkeypatch.chdir(tmp_path)
    couple_id = couple_with_partners(db, hearth.clock.now())
    add_ritual(db, hearth.clock.now(), couple_id, "five-minute-check-in")
    run = Cli(hearth)
    run.ok("couple", "add", "Solo", "-z", "UTC")  # room for a partner
    return run


# -- every command, every parameter ---------------------------------------------------------


def test_every_command_and_parameter_is_covered() -> None:
    covered = {path for path, _ in CASES}
    without = {  # nothing but flags to fuzz: run as they are below
        path
        for path, cmd in COMMANDS
        if all(getattr(p, "is_flag", False) or p.name == "help" for p in cmd.params)
    }
    assert {path for path, _ in COMMANDS} == covered | without
    assert len(CASES) > 100


# PostgreSQL's own risks are in what reaches the driver (numbers past 64 bits, lengths past
# a column, Unicode, quotes): there a subset keeps the suite's time in bounds.
PG_HOSTILE = ["", "x" * 10_000, "9" * 23, "-1", "ÄBC", "a\u0308bc", "🙂", "'; DROP TABLE x; --"]


def test_hostile_values_for_every_parameter(world: Cli, db: Database) -> None:
    commands = dict(COMMANDS)
    broken = []
    for path, name in CASES:
        for value in HOSTILE if db.is_sqlite else PG_HOSTILE:
            try:
                check(world, db, argv(path, commands[path], name, value))
            except AssertionError as exc:
                broken.append(str(exc).splitlines()[0][:300])
    assert not broken, f"{len(broken)} broken promises:\n" + "\n".join(broken)


@fuzz_settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=st.sampled_from(CASES), value=st.text(max_size=80))
def test_arbitrary_text_for_any_parameter(
    world: Cli, db: Database, case: tuple[tuple[str, ...], str], value: str
) -> None:
    path, name = case
    check(world, db, argv(path, dict(COMMANDS)[path], name, value))


# -- the cases issue 15 lists ------------------------------------------------------------------

ZONE_DIRS = ("Europe", "America/Argentina", "Asia", "Pacific", "Antarctica")
TOO_BIG = "9" * 23
CONCRETE: list[tuple[list[str], int, str]] = [
    *[
        (args(z), 2, "unknown timezone")
        for z in ZONE_DIRS
        for args in (
            lambda z: ["couple", "add", "Other", "-z", z],
            lambda z: ["couple", "edit", "Alice & Sam", "--timezone", z],
            lambda z: ["partner", "add", "Solo", "Kim", "-z", z],
            lambda z: ["partner", "edit", "Alice", "--timezone", z],
            lambda z: ["ritual", "add", "Alice & Sam", "-t", "date-night", "-z", z],
            lambda z: ["ritual", "edit", "1", "--timezone", z],
        )
    ],
    *[
        (args, 2, "not found")
        for args in (
            ["couple", "show", TOO_BIG],
            ["couple", "remove", TOO_BIG, "--yes"],
            ["partner", "show", TOO_BIG],
            ["ritual", "show", TOO_BIG],
            ["feed", "url", TOO_BIG],
        )
    ],
    *[
        (args, 2, "is not in the range")
        for args in (
            ["deliveries", "retry", TOO_BIG],
            ["prompts", "disable", TOO_BIG],
            ["prompts", "enable", TOO_BIG],
            ["repair", "cancel", TOO_BIG],
        )
    ],
    (["deliveries", "list", "--since", "999999999d"], 2, "reaches back past year 1"),
    (["deliveries", "list", "--since", "99999999999999h"], 2, "reaches back past year 1"),
    (["db", "upgrade", "--revision", "bogus"], 2, "unknown revision 'bogus'"),
    (["db", "upgrade", "--revision", ""], 2, "unknown revision ''"),
    (["db", "upgrade", "--revision", "head+1"], 2, "unknown revision 'head+1'"),
    (["db", "upgrade", "--revision", "0001"], 2, "upgrade never goes back"),
    (["couple", "pause", "1", "--until", ""], 2, "'' is not a date"),
    (["ritual", "pause", "1", "--until", ""], 2, "'' is not a date"),
    (["ritual", "edit", "1", "--kind", "repair"], 2, "repair conversations start on request"),
    (["ritual", "edit", "1", "--rrule", "FREQ=DAILY;UNTIL=20200101"], 2, "no future occurrence"),
    (
        ["ritual", "edit", "1", "--on", "2020-01-01", "--rrule", "FREQ=DAILY;COUNT=2"],
        2,
        "no future occurrence",
    ),
    (
        ["ritual", "edit", "1", "--rrule", "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"],
        2,
        "no future occurrence",
    ),
    (
        [
            "ritual",
            "add",
            "Alice & Sam",
            "--kind",
            "custom",
            "--title",
            "T",
            "--at",
            "21:00",
            "--rrule",
            "FREQ=DAILY;COUNT=abc",
        ],
        2,
        "COUNT=ABC is not a whole number",
    ),
    (
        [
            "ritual",
            "add",
            "Alice & Sam",
            "--kind",
            "custom",
            "--title",
            "T",
            "--at",
            "21:00",
            "--rrule",
            "FREQ=MONTHLY;BYDAY=MO;BYSETPOS=a",
        ],
        2,
        "BYSETPOS=A is not a number",
    ),
    (
        [
            "ritual",
            "add",
            "Alice & Sam",
            "--kind",
            "custom",
            "--title",
            "T",
            "--at",
            "21:00",
            "--rrule",
            "FREQ=DAILY;INTERVAL=1.5",
        ],
        2,
        "INTERVAL=1.5 is not a whole number",
    ),
    (["ritual", "preview", "Five-minute check-in"], 2, "give --couple to name it by title"),
    (["couple", "add", "Other", "-z", "/etc/localtime"], 2, "timedatectl"),
    (["couple", "add", "Other", "-z", "x" * 10_000], 2, "(10000 characters)"),
    (["partner", "add", "Solo", "Kim", "--phone", "++4915123456789"], 2, "two + signs"),
    (["web", "--port", "99999"], 2, "is not in the range"),
    (["web", "--port", "-1"], 2, "is not in the range"),
    (["web", "--host", "256.256.256.256"], 2, "is not an address or a known host name"),
]


@pytest.mark.parametrize(("args", "code", "fragment"), CONCRETE, ids=lambda v: str(v)[:40])
def test_the_cases_that_were_found(
    world: Cli, db: Database, args: list[str], code: int, fragment: str
) -> None:
    result = check(world, db, args).result
    assert result.exit_code == code, result.output
    assert fragment in result.stderr, result.stderr
    assert "repair" not in result.stderr or "repair" in fragment or "repair" in " ".join(args)


def test_kind_hints_leave_out_repair(world: Cli, db: Database) -> None:
    args = ["ritual", "add", "Alice & Sam", "--kind", "bogus", "--title", "T", "--at", "21:00"]
    result = check(world, db, args).result
    assert result.exit_code == 2
    assert "one of check_in, gratitude, date_night, custom" in result.stderr
    assert "repair" not in result.stderr


def test_a_repair_needs_partners_to_invite(world: Cli, db: Database) -> None:
    world.ok("couple", "add", "Lonely", "-z", "UTC")
    result = check(world, db, ["repair", "request", "Lonely"]).result
    assert result.exit_code == 2
    assert (
        result.stderr == "error: couple 'Lonely' has no partners yet: `hearth partner add` first\n"
    )


# -- configuration: every key, from a file and from the environment ------------------------


def _keys() -> list[tuple[str, str]]:
    return [
        (section, key)
        for section in SECTIONS
        for key in Settings.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
    ]


FILE_VALUES: list[Any] = [
    "abc",
    True,
    -1,
    0,
    1.5,
    float("inf"),
    "",
    [],
    {"a": 1},
    "x" * 10_000,
    "\x00",
]
ENV_VALUES = ["abc", "inf", "nan", "-1", "", "x" * 10_000, "true", "Europe", "http://"]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value == float("inf"):
        return "inf"
    if isinstance(value, str):
        return (
            '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\x00", "\\u0000") + '"'
        )
    if isinstance(value, list):
        return "[]"
    if isinstance(value, dict):
        return "{ a = 1 }"
    return str(value)


def shell(args: list[str], env: dict[str, str], db: Database) -> Result:
    """``hearth ARGS`` as from a shell, settings from files and the environment only."""
    before = fingerprint(db)
    result = CliRunner().invoke(cli, args, env=env)
    shown = f"hearth {' '.join(args)} with {str(env)[:120]}"
    assert "Traceback" not in result.output, f"{shown}: {result.output[-1500:]}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{shown} raised {result.exception!r}") from result.exception
    if result.exit_code != 0:
        assert result.exit_code in (1, 2), f"{shown}: exit {result.exit_code}"
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and len(lines[0]) < LINE_LIMIT, f"{shown}: {lines[:3]}"
    assert fingerprint(db) == before, shown
    return result


@pytest.fixture
def shell_db(sqlite_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.chdir(tmp_path)
    return sqlite_db


def test_every_config_key_with_bad_values(shell_db: Database, tmp_path: Path) -> None:
    url = {"HEARTH_DATABASE_URL": shell_db.url}
    broken = []
    for section, key in _keys():
        for value in FILE_VALUES:
            path = tmp_path / "c.toml"
            path.write_text(f"[{section}]\n{key} = {_toml(value)}\n", encoding="utf-8")
            env = {} if (section, key) == ("database", "url") else url
            try:
                shell(["--config", str(path), "couple", "list"], env, shell_db)
            except AssertionError as exc:
                broken.append(str(exc).splitlines()[0][:300])
        for text in ENV_VALUES:
            env = {**url, f"HEARTH_{section.upper()}_{key.upper()}": text}
            try:
                shell(["couple", "list"], env, shell_db)
            except AssertionError as exc:
                broken.append(str(exc).splitlines()[0][:300])
    assert not broken, f"{len(broken)} broken promises:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite", "database.url: must be a sqlite:/// or postgresql+psycopg:// URL"),
        ("sqlitefoo:///x.db", "database.url: must be a sqlite:/// or postgresql+psycopg:// URL"),
        (
            "postgresql+asyncpg://u@h/db",
            "database.url: must be a sqlite:/// or postgresql+psycopg://",
        ),
        ("postgresql+psycopg://u@h:notaport/db", "database.url: has a port that is not a number"),
    ],
)
def test_database_urls_that_pass_a_glance_but_cannot_be_used(
    shell_db: Database, url: str, message: str
) -> None:
    result = shell(["couple", "list"], {"HEARTH_DATABASE_URL": url}, shell_db)
    assert result.exit_code == 2 and message in result.stderr


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        (b'[web]\npublic_base_url = "http://"\n', {}, "needs a host"),
        (b"[daemon]\nbatch_size = true\n", {}, "must be a number, not true or false"),
        (b'[defaults]\ntimezone = "Europe"\n', {}, "must be an IANA timezone"),
        (b"\xff\xfe[daemon]\n", {}, "not UTF-8 text"),
        (b"", {"HEARTH_DAEMON_PLAN_INTERVAL_SECONDS": "inf"}, "finite number"),
    ],
)
def test_config_values_accepted_though_wrong(
    shell_db: Database, tmp_path: Path, toml: bytes, env: dict[str, str], message: str
) -> None:
    (tmp_path / "c.toml").write_bytes(toml)
    env = {"HEARTH_DATABASE_URL": shell_db.url, **env}
    result = shell(["--config", str(tmp_path / "c.toml"), "couple", "list"], env, shell_db)
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_operational_failures_are_one_line_exit_1(shell_db: Database, tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("not a database\n" * 100)
    cases = {
        "postgresql+psycopg://u@unresolvable.invalid/db": "failed to resolve host",
        f"sqlite:///{text}": "file is not a database",
        f"sqlite:///file:{shell_db.url.removeprefix('sqlite:///')}?mode=ro&uri=true": "readonly",
    }
    for url, fragment in cases.items():
        args = ["couple", "add", "New", "-z", "UTC"]
        result = shell(args, {"HEARTH_DATABASE_URL": url}, shell_db)
        assert result.exit_code == 1 and fragment in result.stderr, (url, result.stderr)
