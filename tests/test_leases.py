"""The lease heartbeat: a worker that is slow, not dead, keeps its claims past the lease; a
renewal never touches a row that is no longer its claim. Real databases, real peers, time
from the fake clock."""

from __future__ import annotations

import io
import random
import threading
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from service.channels.base import Receipt, Transport
from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, Reminder, ReminderState
from service.outbox.dispatcher import Dispatcher
from service.outbox.finisher import to_record
from service.outbox.journal import SEGMENT_BYTES
from service.outbox.outcomes import classify
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


# -- the outcome journal ---------------------------------------------------------------------


def _journaled(db: Database, clock: FakeClock, directory: Path) -> Dispatcher:
    settings = make_settings(db, daemon={"lease_seconds": LEASE, "journal_dir": str(directory)})
    out = io.StringIO()
    return Dispatcher(
        Hearth(settings, db, clock), {ch: ConsoleTransport(ch, out) for ch in Channel}
    )


def test_outcomes_journaled_by_a_killed_worker_are_written_by_the_next_one(
    db: Database, clock: FakeClock, tmp_path: Path
) -> None:
    """The provider answered, the outcome is in the journal, the process dies before its
    batch write: the next worker on the journal writes the outcome, and nothing is sent
    twice when the lease runs out."""
    _setup(db, clock)
    dead = _journaled(db, clock, tmp_path)
    clock.set(TONIGHT)
    token, ids = dead.claim(10)
    jobs = dead.prepare(token, ids)
    cfg = dead.cfg
    journal = dead._finisher.journal
    assert journal is not None
    for n, job in enumerate(jobs):  # what record() journals before it queues
        o = classify(job, Receipt(f"SM{n:032d}"), 0.2, clock.now(), cfg, random.Random(1))
        journal.append(to_record(o))
    journal.close()  # the kill: the process and its slot lock are gone, the file stays
    assert b"+49" not in b"".join(p.read_bytes() for p in tmp_path.iterdir())  # no numbers

    heir = _journaled(db, clock, tmp_path)
    assert heir._finisher.recover() == 3
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(Reminder.state, Reminder.provider_message_id).where(Reminder.id.in_(ids))
        ).all()
    assert {r.state for r in rows} == {ReminderState.SENT}
    assert {r.provider_message_id for r in rows} == {f"SM{n:032d}" for n in range(3)}
    clock.advance(timedelta(seconds=LEASE + 1))
    assert heir.run_once().claimed == 0  # nothing comes back to be sent again
    assert heir._finisher.recover() == 0  # replayed once
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".journal") == [
        "slot-0.2.journal"  # the heir took the dead one's slot: its segment 1 is gone
    ]


def test_a_live_worker_keeps_its_journal_and_deletes_what_is_written(
    db: Database, clock: FakeClock, tmp_path: Path
) -> None:
    _setup(db, clock)
    live = _journaled(db, clock, tmp_path)
    other = _journaled(db, clock, tmp_path)
    clock.set(TONIGHT)
    assert live.run_once().sent == 3
    assert other._finisher.recover() == 0  # a live process's slot is left alone
    journal = live._finisher.journal
    assert journal is not None
    segment = tmp_path / f"slot-{journal.slot}.1.journal"
    assert len(segment.read_bytes().splitlines()) == 3  # the current segment stays...
    journal._size = SEGMENT_BYTES  # full: the next append starts segment 2
    seq = journal.append({"probe": 1})
    journal.written([seq])
    assert not segment.exists()  # ...until it is rolled over with nothing left unwritten
