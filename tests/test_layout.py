"""The house rules the code keeps: one clock, small modules, a light domain layer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLOCK = ROOT / "service" / "core" / "clock.py"
# Calls (or references handed on as defaults) that read the real time.
FORBIDDEN = {
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("date", "today"),
}


def _sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _reads_of_real_time(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in FORBIDDEN
        ):
            found.append(f"{path}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_now_comes_only_from_the_clock_module() -> None:
    offenders = [
        line
        for path in _sources("service", "cli")
        if path != CLOCK
        for line in _reads_of_real_time(path)
    ]
    assert offenders == []


def test_the_rule_catches_a_read_of_real_time(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import time\nfrom datetime import datetime\nx = time.monotonic\ny = datetime.now()\n"
    )
    assert len(_reads_of_real_time(bad)) == 2


# Migrations are a record of the schema's history, not modules anyone splits.
MODULES = [p for p in _sources("service") if "migrations" not in p.parts]


# A smell detector, not a budget: a module past it is probably two concepts and should be
# split by concept. The formatter owns the layout, so code is never squeezed to fit.
@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_service_module_is_longer_than_600_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 600


def test_the_formatter_owns_the_layout() -> None:
    squeezed = [
        f"{path}:{number}"
        for path in _sources("service", "cli", "tests", "bench")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "fmt: " + "skip" in line or "fmt: " + "off" in line
    ]
    assert squeezed == []


def test_the_domain_layer_loads_neither_alembic_nor_twilio() -> None:
    code = (
        "import sys, service.domain.couples, service.domain.rituals, service.domain.partners;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'twilio', 'starlette'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_write_transactions_open_through_the_database_helper() -> None:
    """``Database.begin()`` turns driver errors into the one-line kinds (unavailable, busy);
    a bare ``write_engine.begin()`` would let a raw driver traceback through."""
    bare = [
        f"{path}:{number}"
        for path in _sources("service", "cli")
        if path != ROOT / "service" / "db" / "engine.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "write_engine.begin()" in line
    ]
    assert bare == []
