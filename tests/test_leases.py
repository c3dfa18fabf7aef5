"""The lease heartbeat: a worker that is slow, not dead, keeps its claims past the lease; a
renewal never touches a row that is no longer its claim. Real databases, real peers, time
from the fake clock."""

from __future__ import annotations

import io
import random
import threading
from datetime import timedelta

import sqlalchemy as sa

from service.channels import build
from service.channels.base import Transport
from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, Reminder, ReminderState
from service.outbox.dispatcher import Dispatcher
from tests import peers
from tests.conftest import make_settings
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn
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
        assert slow.renew_leases() == 3
        assert _leases(db) == {clock.now() + timedelta(seconds=LEASE)}
    assert other.run_once().claimed == 0  # nothing expired for another worker to take
    gate.set()
    assert slow.wait_idle(30)
    assert (slow.tally.sent, slow.tally.lost_claims) == (3, 0)
    assert _states_tonight(db) == {"sent"}
    # Written outcomes are no longer claims: the next heartbeat renews nothing.
    assert slow.renew_leases() == 0 and _leases(db) == set()


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
    assert stalled.renew_leases() == 0  # the rows carry the other worker's settled state


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
    assert first.renew_leases() == 1  # its one row, not the two the other worker holds
    with db.engine.connect() as conn:
        stmt = sa.select(Reminder.claim_token, Reminder.lease_until).where(
            Reminder.claim_token.is_not(None)
        )
        leases = {t: until for t, until in conn.execute(stmt)}
    assert leases[token] == clock.now() + timedelta(seconds=LEASE)
    assert leases[second_token] == TONIGHT + timedelta(seconds=LEASE)
    gate.set()
    assert first.wait_idle(30)


# -- a stale claim is unknown ---------------------------------------------------------------


def test_texts_a_killed_worker_sent_are_settled_through_the_provider_not_sent_again(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """The provider answered, the process died before it wrote the outcomes (no journal
    any more): once the lease has run out the next worker finds the rows 'sending' and asks
    Twilio's Messages list before anything else. The text is there, so it is recorded and
    never sent again; an email cannot be looked up and goes again, as the same message
    (one Message-ID per reminder), which a mailbox shows once."""
    _setup(db, clock)
    twilio_standin.now = clock.now
    hearth = Hearth(
        make_settings(
            db, daemon={"lease_seconds": LEASE}, **peers.sections(twilio_standin, smtp_sink)
        ),
        db,
        clock,
    )
    dead = Dispatcher(hearth, build(hearth.settings, clock), rng=random.Random(1))
    clock.set(TONIGHT)
    token, ids = dead.claim(10)
    for job in dead.prepare(token, ids):  # each send answered, then the kill: none written
        dead.transports[job.channel].send(job.message)
    assert twilio_standin.posts == 1 and len(smtp_sink.accepted()) == 2

    heir = Dispatcher(hearth, build(hearth.settings, clock), rng=random.Random(2))
    assert heir.run_once().claimed == 0  # the dead worker's lease still runs
    clock.advance(timedelta(seconds=LEASE + 1))
    tally = heir.run_once()
    assert tally.sent == 3
    assert [lk.kind for lk in twilio_standin.lookups] == ["list"]
    assert twilio_standin.posts == 1 and twilio_standin.accepted_per_recipient() == {
        "+4915123456789": 1
    }
    assert len(smtp_sink.accepted()) == 4  # each email went twice...
    assert smtp_sink.distinct_per_recipient() == {
        "alice@example.org": 1,
        "sam@example.org": 1,
    }  # ...as one message
    assert _states_tonight(db) == {"sent"}
