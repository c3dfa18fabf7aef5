"""Names are matched by one Unicode-aware rule (casefold between canonical forms), stored
as a unique key: on SQLite (whose lower() knows only ASCII) as on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from service.db import migrate
from service.db.engine import Database
from tests.conftest import Cli, snapshot


def _one_error(result: object) -> str:
    lines = result.output.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, lines
    return str(lines[0])


def test_non_ascii_capitals_name_the_same_couple(run: Cli, db: Database) -> None:
    run.ok("couple", "add", "ÄBC", "-z", "Europe/Berlin")
    before = snapshot(db)
    result = run("couple", "add", "äbc", "-z", "Europe/Berlin")
    assert result.exit_code == 2
    assert _one_error(result) == "error: couple name: 'äbc' is already taken (couple 1)"
    assert snapshot(db) == before
    # The decomposed spelling (a + combining diaeresis) and ß/SS are the same names too.
    assert json.loads(run.ok("couple", "show", "a\u0308bc", "--json").output)["name"] == "ÄBC"
    run.ok("couple", "add", "Straße", "-z", "Europe/Berlin")
    assert run("couple", "add", "STRASSE", "-z", "UTC").exit_code == 2


def test_a_partner_joins_the_couple_that_was_named(run: Cli, db: Database) -> None:
    run.ok("couple", "add", "ÄBC", "-z", "Europe/Berlin")
    run.ok("couple", "add", "Zoë & Max", "-z", "Europe/Berlin")
    run.ok("partner", "add", "äbc", "Émile", "--email", "emile@example.org")
    run.ok("partner", "add", "ZOË & MAX", "Zoë", "--email", "zoe@example.org")
    partners = json.loads(run.ok("partner", "list", "--json").output)
    assert [(p["couple"], p["name"]) for p in partners] == [("ÄBC", "Émile"), ("Zoë & Max", "Zoë")]
    assert json.loads(run.ok("partner", "show", "äbc/ÉMILE", "--json").output)["id"] == 1
    refused = run("partner", "add", "ÄBC", "émile", "--email", "e2@example.org")
    assert refused.exit_code == 2
    assert "already has a partner called 'émile'" in _one_error(refused)


def test_the_migration_keys_existing_names_and_parts_matching_ones(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(db, "0004")
    now = "2026-01-01 00:00:00"
    with db.engine.begin() as conn:
        for i, name in enumerate(("ÄBC", "äbc", "Other"), start=1):
            conn.execute(
                sa.text(
                    "INSERT INTO couple (id, name, timezone, change_stamp, created_at, "
                    "updated_at) VALUES (:i, :n, 'UTC', 1, :t, :t)"
                ),
                {"i": i, "n": name, "t": now},
            )
        conn.execute(
            sa.text(
                "INSERT INTO partner (id, couple_id, name, timezone, channels, sms_consent, "
                "full_text, unsubscribe_token, created_at, updated_at) VALUES "
                "(1, 1, 'Émile', 'UTC', '', 'unknown', 0, 'plain-secret-token', :t, :t)"
            ),
            {"t": now},
        )
    migrate.upgrade(db)
    with db.engine.connect() as conn:
        couples = conn.execute(sa.text("SELECT name, name_key FROM couple ORDER BY id")).all()
        partner = conn.execute(
            sa.text("SELECT name_key, unsubscribe_token, unsubscribe_generation FROM partner")
        ).one()
        secret = conn.execute(sa.text("SELECT value FROM server_secret")).scalar_one()
    assert [tuple(c) for c in couples] == [
        ("ÄBC", "äbc"),
        ("äbc (2)", "äbc (2)"),
        ("Other", "other"),
    ]
    assert tuple(partner) == ("émile", None, 1)
    assert len(bytes.fromhex(secret)) == 32
    db.dispose()
