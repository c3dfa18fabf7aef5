"""Watching and caring for a running installation: the dispatcher heartbeat that ``/readyz``
reads in any process, the daily prune that one daemon claims, and prunes that race.

Time comes from the fake clock; the dispatcher loop is driven one pass at a time. The races
on PostgreSQL hold one transaction at a known point and poll ``pg_locks`` (or the other
thread's end) before letting it go on: no timing decides an outcome.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from service.channels.base import Transport
from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.core.config import load_settings
from service.core.exceptions import ConfigError
from service.core.metrics import DISPATCH_TICK
from service.db import daemon_state
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, DeliveryStat
from service.outbox import retention
from service.outbox.dispatcher import Dispatcher
from service.runtime.daemon import Daemon
from tests.factories import check_in_sent
from tests.processes import wait_for
from tests.web import serve

POSTGRES_ONLY = pytest.mark.parametrize(
    "db", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def _console() -> dict[Channel, Transport]:
    return {ch: ConsoleTransport(ch, io.StringIO()) for ch in Channel}


def one_pass(d: Dispatcher) -> None:
    """Run the daemon's dispatch loop for exactly one pass."""
    d.stopping.clear()
    d.loop(sleep_cap=0, on_tick=d.stopping.set)
    d.wait_idle()


def _heartbeat(db: Database) -> datetime | None:
    with db.read() as conn:
        return daemon_state.last(conn, daemon_state.DISPATCHER)


@pytest.fixture
def dispatcher(hearth: Hearth) -> Iterator[Dispatcher]:
    d = Dispatcher(hearth, _console())
    yield d
    d.close()


@pytest.fixture
def http(hearth: Hearth) -> Iterator[httpx.Client]:
    """A separate web service (``hearth web``): no dispatcher in its process."""
    with serve(hearth) as base, httpx.Client(base_url=base, timeout=10) as client:
        yield client


# -- the heartbeat and /readyz ------------------------------------------------------------


def test_a_separate_web_is_ready_only_while_some_dispatcher_ticks(
    hearth: Hearth, clock: FakeClock, dispatcher: Dispatcher, http: httpx.Client
) -> None:
    before = http.get("/readyz")
    assert before.status_code == 503
    assert before.json() == {
        "status": "error",
        "database": "ok",
        "migrations": "ok",
        "dispatcher": "none",
    }
    one_pass(dispatcher)  # a worker elsewhere: only the database connects the two
    assert _heartbeat(hearth.db) == clock.now()
    assert http.get("/readyz").json() == {
        "status": "ok",
        "database": "ok",
        "migrations": "ok",
        "dispatcher": "ok",
    }
    window = timedelta(seconds=hearth.settings.daemon.tick_stale_seconds)
    clock.advance(window - timedelta(seconds=1))
    assert http.get("/readyz").status_code == 200
    clock.advance(timedelta(seconds=1))  # the worker died: no pass for a whole window
    stalled = http.get("/readyz")
    assert stalled.status_code == 503 and stalled.json()["dispatcher"] == "stalled"
    one_pass(dispatcher)
    assert http.get("/readyz").status_code == 200


def test_the_heartbeat_is_written_at_most_every_ten_seconds(
    hearth: Hearth, clock: FakeClock, dispatcher: Dispatcher
) -> None:
    started = clock.now()
    one_pass(dispatcher)
    clock.advance(timedelta(seconds=9))
    one_pass(dispatcher)
    assert _heartbeat(hearth.db) == started  # a busy loop does not write every pass
    clock.advance(timedelta(seconds=1))
    one_pass(dispatcher)
    assert _heartbeat(hearth.db) == started + daemon_state.HEARTBEAT_EVERY


def test_a_heartbeat_never_goes_back_in_time(hearth: Hearth, clock: FakeClock) -> None:
    """Two workers whose clocks differ a little: the newer pass stands."""
    newer = clock.now()
    with hearth.db.write_engine.begin() as conn:
        daemon_state.beat(conn, daemon_state.DISPATCHER, newer)
        daemon_state.beat(conn, daemon_state.DISPATCHER, newer - timedelta(seconds=3))
    assert _heartbeat(hearth.db) == newer


def test_a_pass_whose_claim_fails_is_no_tick(
    hearth: Hearth,
    clock: FakeClock,
    dispatcher: Dispatcher,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    DISPATCH_TICK.set(0)

    def unreachable(*_a: Any, **_k: Any) -> tuple[str, list[int]]:
        raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(dispatcher, "claim", unreachable)
    one_pass(dispatcher)  # the loop survives the error...
    assert DISPATCH_TICK._value.get() == 0  # ...but does not claim it ticked
    assert _heartbeat(hearth.db) is None
    assert http.get("/readyz").json()["dispatcher"] == "none"
    monkeypatch.undo()
    one_pass(dispatcher)
    assert DISPATCH_TICK._value.get() > 0
    assert http.get("/readyz").status_code == 200


def test_the_readiness_window_must_hold_a_pass() -> None:
    env = {"HEARTH_DAEMON_DISPATCH_INTERVAL_SECONDS": "60"}
    with pytest.raises(ConfigError, match="tick_stale_seconds must be at least 3 x"):
        load_settings(environ=env)
    env["HEARTH_DAEMON_TICK_STALE_SECONDS"] = "180"
    assert load_settings(environ=env).daemon.tick_stale_seconds == 180


# -- the daily prune ----------------------------------------------------------------------


def _stats_total(db: Database) -> int:
    with db.session() as s:
        return sum(s.scalars(sa.select(DeliveryStat.count)))


@pytest.fixture
def daemons(hearth: Hearth) -> Iterator[Callable[[], Daemon]]:
    made: list[Daemon] = []

    def make() -> Daemon:
        d = Daemon(hearth, transports=_console(), web=False)
        made.append(d)
        return d

    yield make
    for d in made:
        d.dispatcher.close()


def test_the_daemon_prunes_soon_after_start_then_once_a_day(
    hearth: Hearth,
    clock: FakeClock,
    daemons: Callable[[], Daemon],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check_in_sent(hearth)  # three reminders sent tonight
    clock.advance(timedelta(days=hearth.settings.retention.days + 1))
    d = daemons()
    # start() as it is, but its threads are the test's to drive: no scheduler thread, no
    # dispatch loop; the prune job is then called as the scheduler would call it.
    monkeypatch.setattr(d.scheduler, "start", lambda *a, **k: None)
    monkeypatch.setattr(d, "_spawn", lambda name, target: None)
    d.start()
    job = d.scheduler.get_job("prune")
    assert job is not None
    assert job.trigger.interval == timedelta(minutes=1)  # a restart never skips a day

    removed = job.func()
    assert removed is not None and removed["reminders"] == 3
    assert _stats_total(hearth.db) == 3
    assert job.func() is None  # the next look: already done today
    assert daemons().prune() is None  # nor does another worker prune again
    clock.advance(timedelta(hours=22, minutes=59))
    assert job.func() is None
    clock.advance(timedelta(minutes=1))
    assert job.func() == {"reminders": 0, "replies": 0, "answers": 0, "events": 0}
    assert _stats_total(hearth.db) == 3


def test_a_failed_prune_gives_its_claim_back(
    hearth: Hearth,
    clock: FakeClock,
    daemons: Callable[[], Daemon],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check_in_sent(hearth)
    clock.advance(timedelta(days=hearth.settings.retention.days + 1))
    d = daemons()

    def broken(*args: Any, **kwargs: Any) -> dict[str, int]:
        raise sa.exc.OperationalError("DELETE", {}, Exception("disk I/O error"))

    monkeypatch.setattr(retention, "prune_in_chunks", broken)
    with pytest.raises(sa.exc.OperationalError):
        d.prune()
    monkeypatch.undo()
    clock.advance(timedelta(minutes=1))  # the next look: nobody pruned today
    removed = d.prune()
    assert removed is not None and removed["reminders"] == 3
    assert _stats_total(hearth.db) == 3


def test_a_stop_ends_the_prune_between_chunks_and_gives_the_claim_back(
    hearth: Hearth, clock: FakeClock, daemons: Callable[[], Daemon]
) -> None:
    """SIGTERM during a long first prune: the daemon stops within its grace period instead
    of finishing the prune, and the next daemon to look goes on with it."""
    check_in_sent(hearth)
    clock.advance(timedelta(days=hearth.settings.retention.days + 1))
    stopping = daemons()
    stopping.request_stop()
    assert stopping.prune() == {"reminders": 0, "replies": 0, "answers": 0, "events": 0}
    assert _stats_total(hearth.db) == 0
    clock.advance(timedelta(minutes=1))
    removed = daemons().prune()
    assert removed is not None and removed["reminders"] == 3
    assert _stats_total(hearth.db) == 3


# -- races on PostgreSQL ------------------------------------------------------------------


class Held:
    """Holds the first statement on ``db`` that ``matches`` until :meth:`release`: the
    transaction stays open at that point, with whatever it has locked."""

    def __init__(self, db: Database, matches: Callable[[str], bool]) -> None:
        self.reached = threading.Event()
        self._go_on = threading.Event()
        self._matches = matches
        sa.event.listen(db.engine, "after_cursor_execute", self._after)

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not self.reached.is_set() and self._matches(statement):
            self.reached.set()
            self._go_on.wait(60)  # a safety net only: the test releases it

    def release(self) -> None:
        self._go_on.set()


def _waiting_for_a_lock(db: Database) -> bool:
    with db.engine.connect() as conn:
        return bool(conn.scalar(sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")))


class Racer(threading.Thread):
    def __init__(self, work: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as exc:  # reported by the test
            self.error = exc


def _race(
    hearth: Hearth, matches: Callable[[str], bool], work: Callable[[Hearth], object]
) -> tuple[Racer, Racer]:
    """``work`` in two connections: the first held after its statement ``matches``, the
    second started then; the first goes on once the second waits for a lock or is done."""
    other_db = Database(hearth.db.url)
    try:
        other = Hearth(settings=hearth.settings, db=other_db, clock=hearth.clock)
        held = Held(other_db, matches)
        first = Racer(lambda: work(other))
        first.start()
        wait_for(held.reached.is_set, 30, "the first transaction at the held statement")
        second = Racer(lambda: work(hearth))
        second.start()
        wait_for(
            lambda: not second.is_alive() or _waiting_for_a_lock(hearth.db),
            30,
            "the second transaction to finish or wait",
        )
        held.release()
        first.join(30)
        second.join(30)
        assert not first.is_alive() and not second.is_alive()
    finally:
        other_db.dispose()
    return first, second


@POSTGRES_ONLY
def test_two_prunes_at_once_count_each_reminder_once(hearth: Hearth, clock: FakeClock) -> None:
    """The first prune has counted the old reminders but not deleted them yet when the
    second starts: the second must neither count them again nor fail."""
    check_in_sent(hearth)
    clock.advance(timedelta(days=40))
    first, second = _race(
        hearth,
        lambda sql: "GROUP BY" in sql and "reminder" in sql,
        lambda h: retention.prune(h, 30),
    )
    assert (first.error, second.error) == (None, None)
    assert _stats_total(hearth.db) == 3
    removed = [first.result, second.result]
    assert [r["reminders"] for r in removed if isinstance(r, dict)] == [3, 0]


@POSTGRES_ONLY
def test_two_workers_at_the_daily_prune_prune_once(
    hearth: Hearth, clock: FakeClock, daemons: Callable[[], Daemon]
) -> None:
    """Both look at the same moment; the one that claims first is held mid-transaction,
    before it pruned anything. The other waits for it, then finds the day's prune done."""
    check_in_sent(hearth)
    clock.advance(timedelta(days=hearth.settings.retention.days + 1))
    first, second = _race(
        hearth,
        lambda sql: "daemon_state" in sql and "ON CONFLICT" in sql,
        lambda h: Daemon(h, transports=_console(), web=False).prune(),
    )
    assert (first.error, second.error) == (None, None)
    assert isinstance(first.result, dict) and first.result["reminders"] == 3
    assert second.result is None
    assert _stats_total(hearth.db) == 3
