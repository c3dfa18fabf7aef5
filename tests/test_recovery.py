"""Recovery after a SIGKILL mid-burst, on PostgreSQL, with real processes and real time.

The killed worker's rows are taken again once their lease has run out, as *unknown*: the
restarted worker asks the Twilio stand-in's Messages list for each before sending it. Texts
the provider took (answered or not, read or not when the worker died) are recorded, not
sent again; only those it never got go out. Counted at the stand-in: every number gets
exactly one text.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.db.engine import Database
from service.db.models import Reminder, ReminderState
from tests.conftest import PgSchema
from tests.peers.twilio_standin import TwilioStandIn
from tests.processes import wait_for
from tests.test_daemon import DaemonProcess, _burst, _states, daemons, migrated

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
__all__ = ["daemons", "migrated"]  # fixtures
LEASE = 5.0
LATENCY = 0.1


def _sending(db: Database, rendered: bool = False) -> set[int]:
    """The rows being sent; ``rendered``: only those whose text was written (their send may
    have left; one claimed but not yet rendered cannot have, and needs no lookup)."""
    with db.engine.connect() as conn:
        stmt = sa.select(Reminder.id).where(Reminder.state == ReminderState.SENDING)
        if rendered:
            stmt = stmt.where(Reminder.body.is_not(None))
        return set(conn.scalars(stmt))


def test_a_killed_worker_is_resent_within_the_lease_and_duplicates_only_unanswered(
    pg_schema: PgSchema,
    tmp_path: Path,
    daemons: list[DaemonProcess],
    twilio_standin: TwilioStandIn,
    migrated: Callable[[str], Database],
) -> None:
    db = migrated(pg_schema.url)
    n = 900
    _burst(db, n, due_in_seconds=1)
    twilio_standin.latency = LATENCY
    d = DaemonProcess(
        db.url,
        tmp_path,
        twilio_standin,
        HEARTH_DAEMON_CONCURRENCY="40",
        HEARTH_DAEMON_LEASE_SECONDS=str(LEASE),
    )
    daemons.append(d.start("worker"))
    wait_for(lambda: len(twilio_standin.sent) >= n // 3, 60, "a third of the burst")
    d.kill()  # SIGKILL: no chance to write what is queued
    killed_at = time.monotonic()
    left, rendered = _sending(db), _sending(db, rendered=True)
    assert left, "the kill came mid-burst"
    d.start("worker")  # as the service manager restarts it
    # Within a lease of the kill, plus the restart (a few seconds here) and the lookups.
    wait_for(lambda: not (_sending(db) & left), LEASE + 25, "the killed worker's rows")
    resent_in = time.monotonic() - killed_at
    wait_for(lambda: _states(db).get("sent") == n, 60, "the whole burst")
    assert d.signal(signal.SIGTERM) == 0
    counts = Counter(a.to for a in twilio_standin.accepted())
    assert set(counts) == {f"+1415555{i:04d}" for i in range(n)}  # nothing lost
    assert max(counts.values()) == 1, [to for to, c in counts.items() if c > 1]  # none twice
    lookups = len([lk for lk in twilio_standin.lookups if lk.kind == "list"])
    assert lookups >= len(rendered)  # each that may have left asked for before anything else
    assert resent_in <= LEASE + 25
    print(f"left sending {len(left)}, lookups {lookups}, duplicated 0, settled in {resent_in:.1f}s")
