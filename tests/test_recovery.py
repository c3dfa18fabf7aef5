"""Recovery after a SIGKILL mid-burst, on PostgreSQL, with real processes and real time.

The killed worker's rows go out again within a lease, and the only texts sent twice are
those whose answer the worker had not read when it died (not answered yet, or answered and
still on the wire: on this busy machine a worker reads an answer some tens of milliseconds
after the provider writes it). Every answer it read was in the outcome journal, and the
restarted worker writes it before the lease frees the row.
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
from service.db.models import Partner, Reminder, ReminderState
from service.outbox import journal
from tests.conftest import PgSchema
from tests.peers.twilio_standin import TwilioStandIn
from tests.processes import wait_for
from tests.test_daemon import DaemonProcess, _burst, _states, daemons, migrated

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
__all__ = ["daemons", "migrated"]  # fixtures
LEASE = 5.0
LATENCY = 0.1


def _sending(db: Database) -> set[int]:
    with db.engine.connect() as conn:
        stmt = sa.select(Reminder.id).where(Reminder.state == ReminderState.SENDING)
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
        HEARTH_DAEMON_JOURNAL_DIR=str(tmp_path / "journal"),
    )
    daemons.append(d.start("worker"))
    wait_for(lambda: len(twilio_standin.sent) >= n // 3, 60, "a third of the burst")
    d.kill()  # SIGKILL: no chance to write what is queued
    killed_at = time.monotonic()
    unanswered = twilio_standin.in_progress  # still waiting out the latency: never answered
    answered = {r.sid: r.to for r in twilio_standin.requests if r.sid}
    left = _sending(db)
    assert left, "the kill came mid-burst"
    # What the worker had heard back when it died: each answer it read is in the journal.
    heard = {
        str(rec["fields"]["provider_message_id"]): rec["id"]
        for seg in sorted((tmp_path / "journal").glob("*.journal"))
        for rec in journal.read(seg)
        if rec["fields"].get("provider_message_id")
    }
    unheard = len(set(answered) - set(heard))  # answered, still on its way in at the kill
    unwritten = left & set(heard.values())  # heard and journaled, not yet in the database
    d.start("worker")  # as the service manager restarts it
    # Within a lease of the kill, plus the restart (a few seconds here) and the send itself.
    wait_for(lambda: not (_sending(db) & left), LEASE + 25, "the killed worker's rows")
    resent_in = time.monotonic() - killed_at
    wait_for(lambda: _states(db).get("sent") == n, 60, "the whole burst")
    assert d.signal(signal.SIGTERM) == 0
    numbers = [r.to for r in twilio_standin.requests]
    counts = Counter(numbers)
    duplicates = len(numbers) - len(counts)
    assert set(numbers) == {f"+1415555{i:04d}" for i in range(n)}  # nothing lost
    # The journaled outcomes the database did not have were written, not sent again...
    assert unwritten, "the kill left answered outcomes unwritten (the case at issue)"
    with db.engine.connect() as conn:
        to = dict(
            conn.execute(
                sa.select(Reminder.id, Partner.phone)
                .join(Partner, Partner.id == Reminder.partner_id)
                .where(Reminder.id.in_(unwritten))
            ).all()
        )
    assert all(counts[to[i]] == 1 for i in unwritten)
    # ...so the only texts sent twice are those whose answer the worker never read.
    assert duplicates <= unanswered + unheard, (duplicates, unanswered, unheard)
    assert resent_in <= LEASE + 25
    print(
        f"left sending {len(left)}, unwritten {len(unwritten)}, unanswered {unanswered}, "
        f"unheard {unheard}, duplicated {duplicates}, re-sent in {resent_in:.1f}s"
    )
