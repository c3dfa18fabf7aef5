"""A 429 storm with Retry-After slows the whole Twilio account, not one message: the other
reminders wait (one probe per Retry-After while the storm lasts), then go out at the paced
rate in due order. The real twilio client against the stand-in over HTTP; both databases."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from service.channels import build
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Reminder, ReminderState
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from tests import peers
from tests.conftest import make_settings
from tests.factories import sms_one_offs
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn

T0 = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)
COUNT, CONCURRENCY, RATE = 120, 10, 40.0


def _staggered(db: Database, now: datetime) -> None:
    """Reminder ``i`` is due at T0 + i seconds, to its own number: the send order is known."""
    sms_one_offs(db, now, [T0 + timedelta(seconds=i) for i in range(COUNT)], title="Storm")
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)


def test_a_429_storm_holds_the_whole_account_then_resumes_in_due_order(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    _staggered(db, clock.now())
    sections = peers.sections(twilio_standin, smtp_sink)
    sections["twilio"] |= {"sender_rate_per_second": RATE, "account_rate_per_second": RATE}
    sections["daemon"] = {"concurrency": CONCURRENCY, "batch_size": COUNT}
    hearth = Hearth(settings=make_settings(db, **sections), db=db, clock=clock)
    d = Dispatcher(hearth, build(hearth.settings), rng=random.Random(4))
    clock.set(T0 + timedelta(seconds=COUNT))  # every one due, the earliest most overdue
    twilio_standin.storm(3.0, status=429, retry_after=1)
    tally = d.run_once()
    requests = twilio_standin.requests
    storm_began = requests[0].received_at
    storm_end = storm_began + 3.0
    in_storm = [r for r in requests if r.received_at < storm_end]
    refused = [r for r in requests if not r.ok]
    # The first wave was already in flight when the first 429 came; after it, one probe a
    # second while the storm lasts. Without the breaker: about RATE a second, 120 in all.
    per_second = Counter(int(r.received_at - storm_began) for r in in_storm)
    assert len(in_storm) <= CONCURRENCY + 4, per_second
    assert max(per_second[s] for s in (1, 2)) <= 2, per_second
    assert all(r.http_status == 429 for r in in_storm)
    # After the storm: everything else, in due order, at the paced rate.
    sent = [int((r.to or "")[-4:]) for r in requests if r.ok]
    assert len(sent) == COUNT - len(refused) == tally.sent
    # In due order, give or take the threads racing for the same instant on a busy machine.
    assert all(abs(a - b) <= CONCURRENCY for a, b in zip(sent, sorted(sent), strict=True))
    assert refused[0].to == "+14155550000"  # the earliest-due went first
    span = requests[-1].received_at - storm_end
    assert len(sent) / max(span, 1e-3) <= RATE * 1.2
    with db.session() as s:  # the refused ones retry after their own Retry-After
        stmt = sa.select(sa.func.count()).where(Reminder.state == ReminderState.SCHEDULED)
        assert s.scalar(stmt) == len(refused) == tally.retried
