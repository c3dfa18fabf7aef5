"""The daemon as a real process: ``hearth serve``/``worker`` in a subprocess, real time, the
Twilio stand-in. No sleeping for time to pass: each test polls for an outcome with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from service.calendar import feed_tokens
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Couple, Reminder, ReminderState
from service.domain import partners, rituals
from tests.conftest import PgSchema, make_settings
from tests.factories import sms_one_offs
from tests.peers.twilio_standin import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, TwilioStandIn
from tests.processes import free_port, wait_for
from tests.web import serve

pytestmark = pytest.mark.slow


class DaemonProcess:
    def __init__(self, url: str, tmp: Path, standin: TwilioStandIn | None, **env: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
        self.env.update(
            HEARTH_DATABASE_URL=url,
            HEARTH_DAEMON_RUN_WEB="false",
            HEARTH_LOG_FORMAT="json",
            HEARTH_DAEMON_LEASE_SECONDS="5",
            HEARTH_DAEMON_EVENT_POLL_SECONDS="0.5",
        )
        if standin is not None:
            self.env.update(
                HEARTH_CHANNELS_SMS="twilio",
                HEARTH_TWILIO_ACCOUNT_SID=DEFAULT_ACCOUNT_SID,
                HEARTH_TWILIO_AUTH_TOKEN=DEFAULT_AUTH_TOKEN,
                HEARTH_TWILIO_FROM_NUMBER="+15005550006",
                HEARTH_TWILIO_API_BASE_URL=standin.base_url,
                HEARTH_TWILIO_SENDER_RATE_PER_SECOND="10000",
                HEARTH_TWILIO_ACCOUNT_RATE_PER_SECOND="10000",
            )
        self.env.update(env)
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    started = 0

    def start(self, *args: str, ready: bytes | None = b"daemon_started") -> DaemonProcess:
        """Start ``hearth <args>``; wait for ``ready`` in its output (None: do not wait)."""
        DaemonProcess.started += 1
        self.out = self.tmp / f"daemon{DaemonProcess.started}.out"
        with self.out.open("wb") as sink:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", *(args or ("serve",))],
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        if ready is not None:
            # A bound, not a target: a start on a loaded two-core machine has taken over 30 s.
            wait_for(lambda: ready in self.out.read_bytes(), 90, "daemon start")
        return self

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    """Processes killed at teardown. A test names its database fixture before this one, so
    the processes are gone before their schema is dropped: a drop beside a live daemon can
    deadlock with it."""
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        d.kill()


def _burst(db: Database, n: int, due_in_seconds: float = 2.0) -> datetime:
    """``n`` couples, each with one partner on SMS and a one-off ritual whose nudge is due
    in ``due_in_seconds`` (real time)."""
    now = datetime.now(UTC)
    start = now + timedelta(seconds=due_in_seconds)
    sms_one_offs(db, now, [start] * n)
    return start


@pytest.fixture
def migrated() -> Iterator[Callable[[str], Database]]:
    from service.db import migrate

    made: list[Database] = []

    def make(url: str) -> Database:
        db = Database(url)
        migrate.upgrade(db)
        made.append(db)
        return db

    yield make
    for db in made:
        db.dispose()


@pytest.fixture
def backend_db(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    migrated: Callable[[str], Database],
    backend: str,
) -> Database:
    """A migrated database of the test's ``backend``, in a schema of its own on PostgreSQL."""
    if backend == "postgres":
        schema: PgSchema = request.getfixturevalue("pg_schema")
        return migrated(schema.url)
    return migrated(f"sqlite:///{tmp_path / 'h.db'}")


def _states(db: Database) -> dict[str, int]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(Reminder.state, sa.func.count()).group_by(Reminder.state)
        ).all()
    return {ReminderState(s).value: n for s, n in rows}


def test_serve_sends_replans_on_edits_and_stops_cleanly(
    tmp_path: Path, daemons: list[DaemonProcess], migrated: Callable[[str], Database]
) -> None:
    db = migrated(f"sqlite:///{tmp_path / 'h.db'}")
    _burst(db, 3, due_in_seconds=1)
    d = DaemonProcess(db.url, tmp_path, None)
    daemons.append(d.start("serve", "--no-web"))
    wait_for(lambda: _states(db).get("sent") == 3, 20, "3 console sends")
    assert d.output().count("--- sms to +1415555") == 3
    assert "+1415555" not in "".join(
        line for line in d.output().splitlines() if line.startswith("{")
    )  # JSON log lines carry no numbers

    # An edit made with the CLI while the daemon runs is planned within 2 seconds.
    now = datetime.now(UTC)
    with db.session() as s:
        c = s.scalars(sa.select(Couple).where(Couple.name == "Burst 0")).one()
        rituals.add(
            s, now, c, rituals.RitualSpec(kind="custom", title="Later", at="23:59", every="daily")
        )
    edited = time.monotonic()
    wait_for(lambda: _states(db).get("scheduled", 0) >= 1, 5, "replan after an edit")
    assert time.monotonic() - edited < 2.5
    assert d.signal(signal.SIGTERM) == 0
    assert "daemon_stopped" in d.output()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_sigkill_mid_burst_loses_nothing(
    backend_db: Database,
    tmp_path: Path,
    daemons: list[DaemonProcess],
    twilio_standin: TwilioStandIn,
) -> None:
    db = backend_db
    n = 300
    _burst(db, n, due_in_seconds=1)
    twilio_standin.latency = 0.1
    d = DaemonProcess(db.url, tmp_path, twilio_standin, HEARTH_DAEMON_CONCURRENCY="20")
    daemons.append(d.start("worker"))
    wait_for(lambda: len(twilio_standin.sent) >= n // 3, 30, "a third of the burst")
    d.kill()  # SIGKILL: no chance to clean up
    at_kill = len(twilio_standin.requests)
    with db.engine.connect() as conn:
        in_flight = conn.scalar(
            sa.select(sa.func.count()).where(Reminder.state == ReminderState.SENDING)
        )
    d.start("worker")  # the rows left 'sending' come back after their 5 s lease
    wait_for(lambda: _states(db).get("sent") == n, 60, "the whole burst")
    d.signal(signal.SIGTERM)
    numbers = [r.to for r in twilio_standin.requests]
    duplicates = len(numbers) - len(set(numbers))
    assert set(numbers) == {f"+1415555{i:04d}" for i in range(n)}  # nothing lost
    assert duplicates <= (in_flight or 0)  # at most the sends in flight at the kill
    assert at_kill < len(numbers)


def test_slow_pacing_and_a_short_lease_send_each_reminder_once(
    tmp_path: Path,
    daemons: list[DaemonProcess],
    twilio_standin: TwilioStandIn,
    migrated: Callable[[str], Database],
) -> None:
    """40 texts due at once, 4 segments a second from one sender: about 10 s of sending
    against a 5 s lease. Claimed all at once, the last ones would wait for pacing past their
    lease and the worker would claim and send them again."""
    db = migrated(f"sqlite:///{tmp_path / 'h.db'}")
    n = 40
    _burst(db, n, due_in_seconds=1)
    d = DaemonProcess(
        db.url,
        tmp_path,
        twilio_standin,
        HEARTH_DAEMON_CONCURRENCY="20",  # room for all 40 in the claim window
        HEARTH_TWILIO_SENDER_RATE_PER_SECOND="4",
    )
    daemons.append(d.start("worker"))
    wait_for(lambda: _states(db).get("sent") == n, 60, "the whole burst")
    assert d.signal(signal.SIGTERM) == 0
    numbers = sorted(r.to or "" for r in twilio_standin.requests)
    assert numbers == sorted({f"+1415555{i:04d}" for i in range(n)})  # each once
    assert "claim_lost" not in d.output()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_hands_queued_rows_back_and_records_sends_that_end_after_the_grace(
    tmp_path: Path,
    daemons: list[DaemonProcess],
    twilio_standin: TwilioStandIn,
    migrated: Callable[[str], Database],
    sig: int,
) -> None:
    db = migrated(f"sqlite:///{tmp_path / 'h.db'}")
    n = 8
    _burst(db, n, due_in_seconds=1)
    twilio_standin.latency = 1.5  # each send outlasts the grace period
    d = DaemonProcess(
        db.url,
        tmp_path,
        twilio_standin,
        HEARTH_DAEMON_CONCURRENCY="2",  # two sending, two more claimed and queued
        HEARTH_DAEMON_SHUTDOWN_GRACE_SECONDS="0.2",
    )
    daemons.append(d.start("worker"))
    wait_for(lambda: twilio_standin.in_progress == 2, 20, "two sends at the provider")
    assert _states(db).get("sending") == 4
    assert d.signal(sig) == 0
    sent = twilio_standin.sent
    assert len(sent) == 2 and len(twilio_standin.requests) == 2  # nothing started after
    # The two sends in flight ended after the grace period and are recorded all the same;
    # the two queued rows went back to the outbox untried, with the four never claimed.
    assert _states(db) == {"sent": 2, "scheduled": n - 2}
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(Reminder.state, Reminder.attempts, Reminder.provider_message_id)
        ).all()
    assert {r.provider_message_id for r in rows if r.state == ReminderState.SENT} == {
        s.sid for s in sent
    }
    assert {r.attempts for r in rows if r.state == ReminderState.SCHEDULED} == {0}
    assert "daemon_stopped" in d.output()


@pytest.mark.postgres
def test_two_workers_on_postgres_send_each_reminder_once(
    pg_schema: PgSchema,
    tmp_path: Path,
    daemons: list[DaemonProcess],
    twilio_standin: TwilioStandIn,
    migrated: Callable[[str], Database],
) -> None:
    db = migrated(pg_schema.url)
    n = 400
    twilio_standin.latency = 0.05
    for _ in range(2):
        d = DaemonProcess(
            db.url,
            tmp_path,
            twilio_standin,
            HEARTH_DAEMON_CONCURRENCY="20",
            HEARTH_DAEMON_BATCH_SIZE="40",
        )
        daemons.append(d)
        d.start("worker")
    # Made once both run (each replans it from the events), so neither has a head start;
    # batches of 40 leave work for both to claim.
    _burst(db, n, due_in_seconds=6)
    wait_for(lambda: _states(db).get("sent") == n, 60, "the whole burst")
    for d in daemons:
        assert d.signal(signal.SIGTERM) == 0
    numbers = [r.to for r in twilio_standin.requests]
    assert len(numbers) == n and len(set(numbers)) == n
    both: dict[str, Any] = {d.out.name: d.output().count("reminder_sent") for d in daemons}
    assert all(v > 0 for v in both.values()), both  # the work really was shared


def _metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.postgres
def test_serve_on_postgres_reports_a_burst_in_metrics(
    pg_schema: PgSchema,
    tmp_path: Path,
    daemons: list[DaemonProcess],
    twilio_standin: TwilioStandIn,
    migrated: Callable[[str], Database],
) -> None:
    db = migrated(pg_schema.url)
    n = 30
    _burst(db, n, due_in_seconds=2)
    twilio_standin.fail_to("+14155550007", status=400, code=21211)  # one permanent failure
    port = free_port()
    d = DaemonProcess(
        db.url,
        tmp_path,
        twilio_standin,
        HEARTH_DAEMON_RUN_WEB="true",
        HEARTH_WEB_PORT=str(port),
        HEARTH_WEB_PUBLIC_BASE_URL="https://hearth.example.org",
        HEARTH_CHANNELS_EMAIL="smtp",
    )
    daemons.append(d.start("serve"))
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _states(db) == {"sent": n - 1, "failed": 1}, 30, "the burst")
    with db.session() as s:
        token = feed_tokens.issue(s, datetime.now(UTC), partners.resolve(s, "Burst 0/Alex"))
    first = httpx.get(f"{base}/feeds/{token}.ics", timeout=5)
    again = httpx.get(
        f"{base}/feeds/{token}.ics", headers={"If-None-Match": first.headers["etag"]}, timeout=5
    )
    assert (first.status_code, again.status_code) == (200, 304)
    unsigned = httpx.post(f"{base}/twilio/inbound", data={"From": "+1", "Body": "x"}, timeout=5)
    assert unsigned.status_code == 403
    assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200

    m = _metrics(base)
    sms = (("channel", "sms"),)
    assert m[("hearth_reminders_total", (("channel", "sms"), ("state", "sent")))] == n - 1
    assert m[("hearth_reminders_total", (("channel", "sms"), ("state", "failed")))] == 1
    assert m[("hearth_send_lateness_seconds_count", sms)] == n - 1
    assert 0 < m[("hearth_send_latency_seconds_count", sms)] <= n
    assert m[("hearth_outbox_depth", (("state", "sent"),))] == n - 1
    assert m[("hearth_outbox_depth", (("state", "failed"),))] == 1
    assert m[("hearth_outbox_oldest_due_seconds", ())] == 0
    assert m[("hearth_planner_duration_seconds_count", ())] >= 1
    assert m[("hearth_feed_requests_total", (("status", "200"),))] == 1
    assert m[("hearth_feed_requests_total", (("status", "304"),))] == 1
    forbidden = (("endpoint", "inbound"), ("outcome", "forbidden"))
    assert m[("hearth_webhook_requests_total", forbidden)] == 1
    assert m[("hearth_dispatcher_last_tick_timestamp_seconds", ())] > time.time() - 30
    assert d.signal(signal.SIGTERM) == 0


@pytest.mark.parametrize("command", ["serve", "worker", "web"])
def test_every_process_refuses_a_schema_behind_the_code(
    tmp_path: Path, migrated: Callable[[str], Database], command: str
) -> None:
    from service.db import migrate

    db = migrated(f"sqlite:///{tmp_path / 'h.db'}")
    migrate.downgrade(db, "0001")  # as if the code was upgraded and `hearth db upgrade` forgotten
    before = migrate.current(db)
    proc = subprocess.run(
        [sys.executable, "-m", "cli", command],
        env=DaemonProcess(db.url, tmp_path, None).env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: database schema is at 0001, this Hearth needs {migrate.head()}: "
        "run `hearth db upgrade`"
    )
    assert migrate.current(db) == before  # nothing was upgraded behind the operator's back


def test_a_worker_serves_its_metrics_and_a_separate_web_sees_it_tick(
    tmp_path: Path,
    daemons: list[DaemonProcess],
    twilio_standin: TwilioStandIn,
    migrated: Callable[[str], Database],
) -> None:
    """The split deployment: `hearth worker` with daemon.metrics_port, `hearth web` (here in
    the test's process, on the real clock) with no dispatcher of its own."""
    db = migrated(f"sqlite:///{tmp_path / 'h.db'}")
    n = 3
    _burst(db, n, due_in_seconds=1)
    web = Hearth(settings=make_settings(db), db=db)
    with serve(web) as base:
        alone = httpx.get(f"{base}/readyz", timeout=5)
        assert alone.status_code == 503 and alone.json()["dispatcher"] == "none"
        port = free_port()
        d = DaemonProcess(db.url, tmp_path, twilio_standin, HEARTH_DAEMON_METRICS_PORT=str(port))
        daemons.append(d.start("worker"))
        wait_for(lambda: _states(db).get("sent") == n, 30, "the burst")
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        m = _metrics(f"http://127.0.0.1:{port}")
        assert m[("hearth_reminders_total", (("channel", "sms"), ("state", "sent")))] == n
        assert m[("hearth_send_lateness_seconds_count", (("channel", "sms"),))] == n
        assert m[("hearth_dispatcher_last_tick_timestamp_seconds", ())] > time.time() - 30
        assert m[("hearth_planner_duration_seconds_count", ())] >= 1
        assert not any(name == "hearth_outbox_depth" for name, _ in m)  # the web's to report
        assert d.signal(signal.SIGTERM) == 0
    assert "metrics_listening" in d.output()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
