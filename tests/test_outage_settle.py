"""An outage longer than the lease in the middle of a burst (issue 25, items 2, 9 and 10):
PostgreSQL of the test's own stopped, SQLite's write lock held by another process's
transaction, or SQLite's disk full (a small tmpfs of the test's own, filled up). Every text
the provider answered before the outage is sent exactly once, counted at the Twilio
stand-in; rows whose right-before-send check failed go out as soon as the database answers;
the dispatcher backs off while every pass fails, and says so in a few log lines, not one
per pass."""

from __future__ import annotations

import errno
import random
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from service.channels import build
from service.core.clock import FakeClock
from service.db import migrate
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, Reminder, ReminderState
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from tests import peers
from tests.conftest import IN_CI, make_settings
from tests.factories import sms_one_offs
from tests.own_postgres import OwnPostgres
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn
from tests.processes import wait_for
from tests.test_dispatcher import _HeldPacing

TONIGHT = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)
LEASE = 5.0
N = 24
pytestmark = [pytest.mark.slow]


class Outage:
    """A database of the test's own and a way to take it away and bring it back."""

    def __init__(self, db: Database, down: Callable[[], object], up: Callable[[], object]) -> None:
        self.db, self.down, self.up = db, down, up


def _own_pg(tmp_path: Path) -> Iterator[Outage]:
    reason = OwnPostgres.available()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    root = Path("/tmp") / f"hearth-pg-{tmp_path.name}"  # the postgres user must reach it
    shutil.rmtree(root, ignore_errors=True)
    pg = OwnPostgres(root).init()
    db = Database(pg.url)
    try:
        yield Outage(db, pg.stop, pg.start)
    finally:
        db.dispose()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def _locked_sqlite(tmp_path: Path) -> Iterator[Outage]:
    path = tmp_path / "hearth.db"
    # A short busy timeout: each write fails soon while the lock is held, as on a busy host.
    db = Database(f"sqlite:///{path}", lock_timeout=0.2)
    holder = sqlite3.connect(path, timeout=5, check_same_thread=False, isolation_level=None)

    def down() -> None:
        holder.execute("BEGIN IMMEDIATE")  # another process's write transaction, held

    def up() -> None:
        holder.execute("ROLLBACK")

    try:
        yield Outage(db, down, up)
    finally:
        holder.close()
        db.dispose()


def _fill(path: Path) -> None:
    """Write ``path`` until the filesystem has no byte left."""
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as filler:
        try:
            while True:
                filler.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        try:
            while True:  # the last blocks, smaller than a chunk
                filler.write(b"\0" * 512)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


def _full_sqlite(tmp_path: Path) -> Iterator[Outage]:
    disk = tmp_path / "disk"
    disk.mkdir()
    # A filesystem of the test's own, so filling it touches nothing else on the machine.
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        reason = f"a full disk needs a tmpfs of the test's own (mount as root): {mounted.stderr}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    path = disk / "hearth.db"
    filler = disk / "filler"
    db = Database(f"sqlite:///{path}", lock_timeout=0.2)
    try:
        yield Outage(db, lambda: _fill(filler), lambda: filler.unlink())
    finally:
        db.dispose()
        subprocess.run(["umount", "-l", str(disk)], check=False)


OUTAGES = {"sqlite": _locked_sqlite, "sqlite-full-disk": _full_sqlite, "postgres": _own_pg}


@pytest.fixture(
    params=["sqlite", "sqlite-full-disk", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    yield from OUTAGES[request.param](tmp_path)


def _burst(db: Database, now: datetime) -> list[str]:
    """``N`` couples, one partner each on SMS, a nudge due at ``TONIGHT``; their numbers."""
    migrate.upgrade(db)
    numbers = sms_one_offs(db, now, [TONIGHT] * N)
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)
    return numbers


def _states(db: Database) -> dict[str, int]:
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(Reminder.state, sa.func.count()).group_by(Reminder.state))
        return {ReminderState(s).value: n for s, n in rows}


@contextmanager
def _looping(d: Dispatcher) -> Iterator[threading.Thread]:
    loop = threading.Thread(target=d.loop, kwargs={"sleep_cap": 0.1}, daemon=True)
    loop.start()
    try:
        yield loop
    finally:
        d.stop(2)
        loop.join(10)
        d.close()


def _dispatcher(
    db: Database, clock: FakeClock, standin: TwilioStandIn, sink: SmtpSink, **daemon: Any
) -> Dispatcher:
    settings = make_settings(
        db, daemon={"lease_seconds": LEASE, **daemon}, **peers.sections(standin, sink)
    )
    hearth = Hearth(settings=settings, db=db, clock=clock)
    return Dispatcher(hearth, build(settings, clock), rng=random.Random(3))


def test_texts_answered_before_an_outage_longer_than_the_lease_are_sent_exactly_once(
    outage: Outage, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """Every text of the burst is at the provider when the database goes away; the answers
    come back during the outage, and not one outcome can be written. The outage outlasts
    the lease. On main the rows went out again once the database was back (51 texts twice
    on PostgreSQL, 29 on SQLite); now they are settled through Twilio's Messages list."""
    clock = FakeClock(TONIGHT - timedelta(hours=4))
    numbers = _burst(outage.db, clock.now())
    twilio_standin.now = clock.now
    twilio_standin.latency = 3.0  # every request is in when the database goes away
    d = _dispatcher(outage.db, clock, twilio_standin, smtp_sink)
    clock.set(TONIGHT)
    with capture_logs() as logs, _looping(d):
        wait_for(lambda: twilio_standin.in_progress == N, 30, "the burst at the provider")
        outage.down()
        wait_for(lambda: len(twilio_standin.accepted()) == N, 30, "every text answered")
        # The outcomes wait for the database; after a lease of tries they are left to be
        # settled (the rows are 'sending' in the database).
        wait_for(lambda: d.in_flight == 0, 60, "the finisher giving up")
        clock.advance(timedelta(minutes=1))  # the outage outlasts any lease the rows had
        outage.up()
        wait_for(lambda: _states(outage.db) == {"sent": N}, 60, "every row recorded as sent")
    assert twilio_standin.accepted_per_recipient() == dict.fromkeys(numbers, 1)
    assert twilio_standin.posts == N  # not one text sent again
    assert {lk.query["To"] for lk in twilio_standin.lookups} == set(numbers)  # each asked for
    # One traceback per fault and batch, however many passes failed meanwhile (on a full
    # disk a pass with nothing to claim writes nothing, and so does not fail at all).
    assert [e["event"] for e in logs].count("dispatch_pass_failed") <= 1
    assert len([e for e in logs if e.get("exc_info")]) <= 6


def test_a_failing_pass_backs_off_and_logs_the_fault_once(
    outage: Outage, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """The database is away and every pass fails at once. On main the loop spun (~350
    passes/s on a full disk) and wrote a traceback per pass; now the passes back off,
    doubling, and the log has one traceback and a line at each doubling."""
    clock = FakeClock(TONIGHT - timedelta(hours=4))
    _burst(outage.db, clock.now())
    d = _dispatcher(outage.db, clock, twilio_standin, smtp_sink)
    clock.set(TONIGHT)
    passes = 0
    real = d._pass

    def counted(limit: int) -> int:
        nonlocal passes
        passes += 1
        return real(limit)

    d._pass = counted  # type: ignore[method-assign]
    outage.down()
    stop_after = threading.Timer(4.0, d.stopping.set)  # 4 s of real outage
    with capture_logs() as logs:
        stop_after.start()
        d.loop(sleep_cap=0.1)
    d.close()
    outage.up()
    # 0.5 + 1 + 2 s of backoff fit in the 4 s: a handful of passes, not hundreds.
    assert 2 <= passes <= 5, passes
    events = [e["event"] for e in logs]
    assert events.count("dispatch_pass_failed") == 1
    assert events.count("dispatch_pass_still_failing") <= 2
    assert twilio_standin.posts == 0


# SQLite's readers never wait for its write lock: the check before sending (a read) cannot
# fail there the way it does while PostgreSQL restarts.
@pytest.mark.parametrize(
    "outage", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_rows_whose_check_before_sending_failed_go_out_as_soon_as_the_database_answers(
    outage: Outage, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """The texts are claimed and waiting for pacing when the database goes away; their
    check right before sending fails. On main they waited out the whole lease (a 1.7 s
    PostgreSQL restart stranded 17 rows for 28.8 s); now they are handed back at the first
    pass that reaches the database. The fake clock never lets a lease run out here."""
    clock = FakeClock(TONIGHT - timedelta(hours=4))
    numbers = _burst(outage.db, clock.now())
    gate = threading.Event()
    d = _dispatcher(outage.db, clock, twilio_standin, smtp_sink)
    d.transports[Channel.SMS] = _HeldPacing(d.transports[Channel.SMS], gate)
    clock.set(TONIGHT)
    token, ids = d.claim(100)
    d.submit(d.prepare(token, ids))
    outage.down()
    gate.set()  # the checks run now, against no database
    wait_for(lambda: d.in_flight == 0, 30, "the failed checks")
    assert twilio_standin.posts == 0
    outage.up()
    with _looping(d):
        wait_for(lambda: _states(outage.db) == {"sent": N}, 30, "every row sent")
    assert d.tally.released >= N
    assert twilio_standin.accepted_per_recipient() == dict.fromkeys(numbers, 1)
