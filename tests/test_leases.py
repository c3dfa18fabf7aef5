"""The lease heartbeat: a worker that is slow, not dead, keeps its claims past the lease; a
renewal never touches a row that is no longer its claim. Real databases, real peers, time
from the fake clock."""

from __future__ import annotations

import io
import random
import threading
from datetime import timedelta

import sqlalchemy as sa

from service.channels.base import Transport
from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, Reminder, ReminderState
from service.outbox.dispatcher import Dispatcher
from tests.conftest import make_settings
from tests.test_dispatcher import TONIGHT, _HeldPacing, _setup, _states_tonight

LEASE = 60.0


def _pair(db: Database, clock: FakeClock, gate: threading.Event) -> tuple[Dispatcher, Dispatcher]:
    hearth = Hearth(make_settings(db, daemon={"lease_seconds": LEASE}), db, clock)
    out = io.StringIO()
    held: dict[Channel, Transport] = {
        ch: _HeldPacing(ConsoleTransport(ch, out), gate) for ch in Channel
    }
    free: dict[Channel, Transport] = {ch: ConsoleTransport(ch, out) for ch in Channel}
    return Dispatcher(hearth, held, rng=random.Random(1)), Dispatcher(hearth, free)


def _leases(db: Database) -> set[object]:
    """The leases of rows being sent."""
    with db.engine.connect() as conn:
        stmt = sa.select(Reminder.lease_until).where(Reminder.state == ReminderState.SENDING)
        return set(conn.scalars(stmt))


def test_a_slow_worker_keeps_its_claims_past_the_lease_by_renewing_them(
    db: Database, clock: FakeClock
) -> None:
    _setup(db, clock)
    gate = threading.Event()
    slow, other = _pair(db, clock, gate)
    clock.set(TONIGHT)
    token, ids = slow.claim(10)
    slow.submit(slow.prepare(token, ids))  # all three wait for pacing: the worker is slow
    for _ in range(3):  # three heartbeats, 2/3 of a lease apart: twice the lease in all
        clock.advance(timedelta(seconds=LEASE * 2 / 3))
        assert slow.leases.renew() == 3
        assert _leases(db) == {clock.now() + timedelta(seconds=LEASE)}
    assert other.run_once().claimed == 0  # nothing expired for another worker to take
    gate.set()
    assert slow.wait_idle(30)
    assert (slow.tally.sent, slow.tally.lost_claims) == (3, 0)
    assert _states_tonight(db) == {"sent"}
    # Written outcomes are no longer claims: the next heartbeat renews nothing.
    assert slow.leases.renew() == 0 and _leases(db) == set()


def test_without_a_heartbeat_the_rows_of_a_stalled_worker_go_to_another(
    db: Database, clock: FakeClock
) -> None:
    """The other side: the lease still frees what a worker holds once it stops renewing
    (dead, or stuck), and the late worker's own outcome then changes nothing."""
    _setup(db, clock)
    gate = threading.Event()
    stalled, other = _pair(db, clock, gate)
    clock.set(TONIGHT)
    token, ids = stalled.claim(10)
    stalled.submit(stalled.prepare(token, ids))
    clock.advance(timedelta(seconds=LEASE + 1))
    assert other.run_once().sent == 3
    gate.set()
    assert stalled.wait_idle(30)
    assert stalled.tally.sent == 0 and stalled.tally.lost_claims == 3
    assert stalled.leases.renew() == 0  # the rows carry the other worker's settled state


def test_a_renewal_leaves_rows_of_other_claims_alone(db: Database, clock: FakeClock) -> None:
    _setup(db, clock)
    gate = threading.Event()
    first, second = _pair(db, clock, gate)
    clock.set(TONIGHT)
    token, ids = first.claim(1)
    first.submit(first.prepare(token, ids))
    second_token, second_ids = second.claim(10)
    assert len(second_ids) == 2
    clock.advance(timedelta(seconds=30))
    assert first.leases.renew() == 1  # its one row, not the two the other worker holds
    with db.engine.connect() as conn:
        stmt = sa.select(Reminder.claim_token, Reminder.lease_until).where(
            Reminder.claim_token.is_not(None)
        )
        leases = {t: until for t, until in conn.execute(stmt)}
    assert leases[token] == clock.now() + timedelta(seconds=LEASE)
    assert leases[second_token] == TONIGHT + timedelta(seconds=LEASE)
    gate.set()
    assert first.wait_idle(30)
