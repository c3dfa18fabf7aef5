"""The capacity forecast (`hearth capacity`, `hearth doctor`'s line, the ritual warnings) and
`hearth couple import` (all or nothing, every bad row named), through the CLI on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from tests.conftest import Cli, make_settings, snapshot

TONIGHT = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)  # 21:00 in Berlin


def _jsonl(n: int, start: int = 0, at: str = "21:00") -> str:
    lines = []
    for i in range(start, start + n):
        lines.append(
            json.dumps(
                {
                    "couple": f"Couple {i}",
                    "timezone": "Europe/Berlin",
                    "partners": [
                        {
                            "name": "A",
                            "phone": f"+1212555{i:04d}",
                            "email": f"a{i}@example.org",
                            "sms_consent": "import",
                            "language": ("en", "de", "es")[i % 3],
                        },
                        {"name": "B", "email": f"b{i}@example.org"},
                    ],
                    "rituals": [f"five-minute-check-in@{at}"],
                }
            )
        )
    return "\n".join(lines) + "\n"


@pytest.fixture
def slow(db: Database, clock: FakeClock) -> Cli:
    """The CLI with one long code at 0.1 segments a second (6 a minute) and email at 60."""
    settings = make_settings(db, twilio={"sender_rate_per_second": 0.1})
    return Cli(Hearth(settings=settings, db=db, clock=clock))


def test_import_then_forecast_names_the_peak_over_capacity(
    slow: Cli, tmp_path: Path, db: Database
) -> None:
    f = tmp_path / "couples.jsonl"
    f.write_text(_jsonl(10), encoding="utf-8")
    out = slow.ok("couple", "import", str(f))
    assert out.output.splitlines()[0] == "imported 10 couples, 20 partners, 10 rituals"
    # 10 texts at 21:00 fit the two-minute window at 6 a minute: on time, not over.
    result = slow("capacity", "--json", "--days", "2")
    assert result.exit_code == 0, result.output
    sms = json.loads(result.output)["pools"]["sms"]
    assert sms["messages"] == 20  # two evenings, one SMS nudge each of the 10 A's
    assert sms["peaks"][0]["due"] == 10 and sms["peaks"][0]["worst_late_seconds"] == 0
    assert sms["earliest_early_seconds"] == 90  # the first of 10 leaves 90 s early

    # Ten more at 21:00: 20 due, 13 fit the window (20:58:00 to 21:00:00, one every 10 s),
    # 7 queue behind them: the last goes 70 s late.
    f2 = tmp_path / "more.jsonl"
    f2.write_text(_jsonl(10, start=10), encoding="utf-8")
    slow.ok("couple", "import", str(f2))
    result = slow("capacity", "--json", "--days", "2")
    assert result.exit_code == 1
    data = json.loads(result.output)
    peak = data["pools"]["sms"]["peaks"][0]
    assert peak["minute"] == TONIGHT.isoformat()
    assert (peak["due"], peak["worst_late_seconds"], peak["expired"]) == (20, 70.0, 0)
    assert peak["latest_send"] == (TONIGHT + timedelta(seconds=70)).isoformat()
    assert data["pools"]["sms"]["over_capacity"][0]["minute"] == TONIGHT.isoformat()
    doctor = slow("doctor")
    assert doctor.exit_code == 1
    assert "minute(s) over capacity, first sms at Mon 2026-01-05 20:00 UTC (20 due" in (
        doctor.output
    )
    # A ritual edit into that minute is warned about; one out of it is not.
    warned = slow.ok("ritual", "edit", "1", "--at", "21:00", "--title", "Talk")
    assert "has nudges in a minute over the sms pool's capacity" in warned.output
    moved = slow.ok("ritual", "edit", "2", "--at", "19:00")
    assert "capacity" not in moved.output


def test_without_leveling_the_same_peak_is_later(
    db: Database, clock: FakeClock, tmp_path: Path
) -> None:
    f = tmp_path / "couples.jsonl"
    f.write_text(_jsonl(10), encoding="utf-8")
    flat = make_settings(db, twilio={"sender_rate_per_second": 0.1}, delivery={"level": False})
    run = Cli(Hearth(settings=flat, db=db, clock=clock))
    run.ok("couple", "import", str(f))
    result = run("capacity", "--json", "--days", "1")
    peak = json.loads(result.output)["pools"]["sms"]["peaks"][0]
    assert (peak["due"], peak["worst_late_seconds"]) == (10, 90.0)  # 10 s apart from 21:00


def test_import_is_all_or_nothing_and_names_every_bad_row(
    run: Cli, tmp_path: Path, db: Database
) -> None:
    good = _jsonl(2).splitlines()
    bad = [
        good[0],
        '{"couple": "No Zone", "partners": [{"name": "X", "email": "x@example.org"}]}',
        good[1],
        "{not json",
        json.dumps(
            {
                "couple": "Bad Phone",
                "timezone": "Europe/Berlin",
                "partners": [{"name": "Y", "phone": "12", "sms_consent": "import"}],
            }
        ),
        json.dumps(
            {
                "couple": "Bad Template",
                "timezone": "UTC",
                "partners": [{"name": "Z", "email": "z@example.org"}],
                "rituals": ["no-such-template"],
            }
        ),
    ]
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(bad) + "\n", encoding="utf-8")
    before = snapshot(db)
    result = run("couple", "import", str(f))
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    # The unreadable line is found first (nothing else is tried while one cannot be read).
    assert len(errors) == 1 and errors[0].startswith("error: bad.jsonl: line 4: not JSON")
    assert snapshot(db) == before
    del bad[3]
    f.write_text("\n".join(bad) + "\n", encoding="utf-8")
    result = run("couple", "import", str(f))
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert [e.split(":")[2].strip() for e in errors] == ["line 2", "line 4", "line 5"]
    assert "timezone" in errors[0] and "phone" in errors[1] and "no-such-template" in errors[2]
    assert snapshot(db) == before


def test_csv_import_and_its_dry_run(run: Cli, tmp_path: Path, db: Database) -> None:
    f = tmp_path / "couples.csv"
    f.write_text(
        "couple,timezone,partner,phone,email,language,sms_consent,both_channels,rituals\n"
        "Ana & Ben,Europe/Berlin,Ana,+4915112345678,ana@example.org,de,signup form,,"
        "five-minute-check-in@21:30;gratitude-three\n"
        "Ana & Ben,,Ben,,ben@example.org,en,,yes,\n"
        "Cy & Di,America/New_York,Cy,+12125550100,,es,web form,,date-night\n"
        "Cy & Di,,Di,,di@example.org,,,,\n",
        encoding="utf-8",
    )
    before = snapshot(db)
    dry = run.ok("couple", "import", str(f), "--dry-run")
    assert dry.output.splitlines()[0] == "would import 2 couples, 4 partners, 3 rituals"
    assert "capacity (next 7 days): email:" in dry.output and "every peak on time" in dry.output
    assert snapshot(db) == before
    data = json.loads(run.ok("couple", "import", str(f), "--dry-run", "--json").output)
    assert data["forecast"]["pools"]["sms"]["messages"] > 0
    run.ok("couple", "import", str(f))
    shown = json.loads(run.ok("partner", "show", "Ana & Ben/Ana", "--json").output)
    assert shown["language"] == "de" and shown["route"] == "sms, then email if sms cannot deliver"
    ben = json.loads(run.ok("partner", "show", "Ana & Ben/Ben", "--json").output)
    assert ben["both_channels"] is True
    again = run("couple", "import", str(f))  # the same couples again: every one named
    assert again.exit_code == 2
    assert [line.split(":")[2].strip() for line in again.output.splitlines()] == [
        "line 2",
        "line 4",
    ]
