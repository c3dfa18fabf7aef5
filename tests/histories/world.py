"""The servers and the running Hearth one database's histories share.

Started once (a database, the Twilio stand-in, the SMTP sink, the web app on uvicorn, one
fake clock) and reset between histories: every table emptied, the peers forgotten, a new
worker (:class:`~service.runtime.daemon.Daemon`, not started: its jobs are called here, as its
scheduler would) and the clock moved on to the next day. The clock never goes back, so a run
of 10,000 histories walks through some 30 years of calendar.
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from service.channels import Transport, build_one
from service.channels.email_smtp import SmtpTransport
from service.core.clock import FakeClock
from service.db import migrate
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Base, Channel, Reminder, ReminderState
from service.domain import prompts
from service.outbox import claims
from service.runtime.daemon import Daemon
from service.web.page import tokens as page_tokens
from tests import peers
from tests.conftest import PgSchema, make_settings
from tests.histories.model import History, Seen
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import DEFAULT_AUTH_TOKEN, TwilioStandIn
from tests.web import serve

PUBLIC = "https://hearth.example.org"
TWILIO_TIMEOUT = 0.15  # seconds: an accept-then-timeout fault costs this much real time
LEASE_SECONDS = 30.0
VACUUM_EVERY = 100  # histories between two VACUUMs of a PostgreSQL world (see _vacuum)
# The longest one fake jump between two passes of the worker: its loop wakes at least this
# often (the next due row, a lease running out, an event) in the real daemon too.
MAX_JUMP = timedelta(hours=6)
WAITING_STEP = timedelta(seconds=10)
WAITING_STEPS = 360


class World:
    """One database with its peers and web app; :meth:`begin` starts a history on it."""

    def __init__(self, backend: str, pg_base: str | None = None) -> None:
        self.backend = backend
        self._stack = ExitStack()
        self._tmp = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="histories-"))
        if backend == "sqlite":
            url = f"sqlite:///{Path(self._tmp) / 'hearth.db'}"
        else:
            schema = PgSchema()
            self._stack.callback(schema.drop)
            url = schema.url
        self.db = Database(url)
        self._stack.callback(self.db.dispose)
        migrate.upgrade(self.db)
        self.standin = self._stack.enter_context(TwilioStandIn())
        self.sink = self._stack.enter_context(SmtpSink())
        self.clock = FakeClock(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
        self.standin.now = self.clock.now  # its DateSent, which settling an unknown asks by
        sections = peers.sections(self.standin, self.sink)
        sections["twilio"]["timeout_seconds"] = TWILIO_TIMEOUT
        sections["web"]["public_base_url"] = PUBLIC
        sections["daemon"] = {"lease_seconds": LEASE_SECONDS, "concurrency": 4}
        self.settings = make_settings(self.db, **sections)
        self.hearth = Hearth(settings=self.settings, db=self.db, clock=self.clock)
        self.base = self._stack.enter_context(serve(self.hearth))
        self.http = self._stack.enter_context(httpx.Client(base_url=self.base, timeout=30))
        self._tls = ssl.create_default_context()
        self.workers: list[Daemon] = []
        self._running: list[Daemon] = []  # workers in a pass now
        self.history = History()
        self.histories = 0
        self.steps = 0
        self.failed_passes = 0  # worker passes that raised (a locked database, a race)
        # Told (histories, steps so far) every 500 histories: a long run shows it is alive.
        self.progress: Callable[[int, int], None] | None = None

    def close(self) -> None:
        self._end_workers()
        self._stack.close()

    # -- one history ------------------------------------------------------------------------

    def begin(self) -> History:
        """A clean slate: empty tables, forgotten peers, a fresh worker, the next day's noon."""
        self._end_workers()
        _truncate(self.db)
        if not self.db.is_sqlite and self.histories % VACUUM_EVERY == 0:
            _vacuum(self.db)
        self.standin.reset()
        self.sink.reset()
        day = self.clock.now().date() + timedelta(days=1)
        self.clock.set(datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC))
        self.history = History()
        with self.db.session(immediate=True) as s:
            prompts.sync_builtin(s, self.clock.now())  # as the daemon's start does
        self.workers = [self.new_worker()]
        self.histories += 1
        if self.progress is not None and self.histories % 500 == 0:
            self.progress(self.histories, self.steps)
        return self.history

    def end(self) -> None:
        self.steps += self.history.steps
        self._end_workers()

    def new_worker(self, hearth: Hearth | None = None, catch_up: bool = True) -> Daemon:
        """A worker as a new process makes it, with transports of its own (the SMTP one
        shares a TLS context: building one reads the system's CA store, 60 ms a worker)."""
        transports: dict[Channel, Transport] = {
            Channel.SMS: build_one(self.settings, Channel.SMS, self.clock),
            Channel.EMAIL: SmtpTransport(self.settings.smtp, tls_context=self._tls),
        }
        worker = Daemon(hearth or self.hearth, transports=transports, web=False)
        if catch_up:
            worker.catch_up()
        return worker

    def _end_workers(self) -> None:
        for worker in self.workers:
            worker.dispatcher.stop(0)
            worker.dispatcher.close()
        self.workers = []

    @property
    def worker(self) -> Daemon:
        return self.workers[0]

    # -- the worker's jobs ------------------------------------------------------------------

    def tick(self, worker: Daemon | None = None) -> None:
        chosen = worker or self.worker
        self.concurrently(lambda: self.tick_jobs(chosen), clock_moves=True)
        self.harvest()

    def tick_jobs(self, worker: Daemon) -> None:
        """One round of the daemon's jobs at the current fake time: events (replans), the
        planning pass, parked receipts, then a dispatch pass that sends what is due."""
        self._running.append(worker)
        try:
            for _ in range(5):
                if not worker.handle_events():
                    break
            worker.plan()
            worker.sweep_receipts()
            worker.dispatcher.run_once()
        finally:
            self._running.remove(worker)

    def advance(self, delta: timedelta) -> None:
        """Move the clock on by ``delta`` the way the daemon's loop sleeps: waking at the next
        due row or lease end (or after :data:`MAX_JUMP`), one tick at each."""
        target = self.clock.now() + delta
        for _ in range(200):
            self.tick()
            now = self.clock.now()
            if now >= target:
                return
            wake = min(target, now + MAX_JUMP)
            due = _next_wake(self.db)
            if due is not None and due > now:
                wake = min(wake, due)
            elif due is not None:
                wake = min(wake, now + timedelta(seconds=1))
            self.clock.set(wake)
        raise AssertionError("the worker kept finding due rows: 200 passes in one advance")

    def advance_to_next(self, late: timedelta) -> None:
        due = claims.next_due(self.db)
        now = self.clock.now()
        if due is None or due > now + timedelta(days=2):
            self.advance(timedelta(hours=1))
        else:
            self.advance(max(due - now, timedelta(0)) + late)

    def harvest(self) -> None:
        """Record what the providers accepted since the last look: a text at the time the
        stand-in took it (a pass held by a Retry-After moves the clock on after that), an
        email at the fake time now (the sink keeps no clock)."""
        h = self.history
        now = self.clock.now()
        sms = [s for s in h.seen if s.channel == "sms"]
        for a in self.standin.accepted()[len(sms) :]:
            h.seen.append(Seen("sms", a.to, a.body, a.sid, a.at, h.next_seq()))
        mails = [s for s in h.seen if s.channel == "email"]
        for m in self.sink.accepted()[len(mails) :]:
            h.seen.append(Seen("email", m.to, m.body, m.message_id, now, h.next_seq()))

    # -- what partners do -------------------------------------------------------------------

    def text(self, sender: str, body: str) -> httpx.Response:
        """A reply by SMS as Twilio posts it: signed over the public URL."""
        params = {
            "AccountSid": peers.DEFAULT_ACCOUNT_SID,
            "MessageSid": "SM" + secrets.token_hex(16),
            "From": sender,
            "To": "+15005550006",
            "Body": body,
        }
        signature = RequestValidator(DEFAULT_AUTH_TOKEN).compute_signature(
            PUBLIC + "/twilio/inbound", params
        )
        resp = self.http.post(
            "/twilio/inbound", data=params, headers={"X-Twilio-Signature": signature}
        )
        self._check_http("POST /twilio/inbound", resp)
        return resp

    def page(self, token: str, action: str, form: dict[str, str]) -> httpx.Response:
        data = {"csrf": page_tokens.csrf(token), **form}
        resp = self.http.post(f"/page/{token}/{action}", data=data)
        self._check_http(f"POST /page/.../{action}", resp)
        return resp

    def receipt(self, sid: str, status: str) -> None:
        """Twilio's status callback for message ``sid``, signed as Twilio signs it (over the
        public URL the message named), posted to this app."""
        params = {
            "AccountSid": peers.DEFAULT_ACCOUNT_SID,
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
        }
        if status == "undelivered":
            params["ErrorCode"] = "30003"
        signature = RequestValidator(DEFAULT_AUTH_TOKEN).compute_signature(
            PUBLIC + "/twilio/status", params
        )
        resp = self.http.post(
            "/twilio/status", data=params, headers={"X-Twilio-Signature": signature}
        )
        self._check_http(f"POST /twilio/status {status}", resp)

    def _check_http(self, what: str, resp: httpx.Response) -> None:
        if resp.status_code >= 500:
            self.history.http_errors.append(f"{what}: HTTP {resp.status_code}")

    # -- faults -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked_database(self) -> Iterator[Hearth]:
        """A worker's view of a database another transaction holds locked: a Hearth whose
        connections give up after 0.05 s (the lock is held for the whole block)."""
        impatient = Database(self.db.url, lock_timeout=0.05)
        hearth = Hearth(settings=self.settings, db=impatient, clock=self.clock)
        holder = sa.create_engine(self.db.url, poolclass=sa.pool.NullPool)
        try:
            with holder.connect() as conn:
                if self.db.is_sqlite:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    conn.exec_driver_sql("BEGIN")
                    conn.exec_driver_sql("LOCK TABLE reminder IN ACCESS EXCLUSIVE MODE")
                try:
                    yield hearth
                finally:
                    conn.exec_driver_sql("ROLLBACK")
        finally:
            holder.dispose()
            impatient.dispose()

    def concurrently(self, *jobs: Any, clock_moves: bool = False) -> None:
        """Run callables at the same time on threads; re-raise the first error.

        ``clock_moves``: a worker's pass may wait on the service clock (a send held by a
        Retry-After waits for that moment); while it does, the fake clock moves on by
        :data:`WAITING_STEP` every tenth of a second, as time would."""
        errors: list[BaseException] = []

        def run(job: Any) -> None:
            try:
                job()
            except BaseException as exc:  # collected for the caller
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120  # real time: a pass that hangs fails the history
        waited = 0
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            for t in threads:
                t.join(0.1)
            if clock_moves and self._held_by_provider() and waited < WAITING_STEPS:
                self.clock.advance(WAITING_STEP)
                waited += 1
        if any(t.is_alive() for t in threads):
            raise AssertionError("a worker's pass did not end")
        if errors:
            raise errors[0]

    def _held_by_provider(self) -> bool:
        """Whether some worker's sends wait for a provider's Retry-After (its breaker is
        open): the only wait on the service clock a pass has."""
        return any(
            not breaker.closed
            for worker in list(self._running)
            for transport in worker.dispatcher.transports.values()
            if (breaker := getattr(transport, "breaker", None)) is not None
        )

    def reminders(self) -> list[Reminder]:
        with self.db.session() as s:
            rows = list(s.scalars(sa.select(Reminder).order_by(Reminder.id)))
            s.expunge_all()
        return rows


def _next_wake(db: Database) -> datetime | None:
    """The earliest due row, or the earliest lease of a 'sending' row to run out."""
    due = claims.next_due(db)
    with db.engine.connect() as conn:
        lease = conn.scalar(
            sa.select(sa.func.min(Reminder.lease_until)).where(
                Reminder.state == ReminderState.SENDING
            )
        )
    found = [t for t in (due, lease) if t is not None]
    return min(found) if found else None


def _vacuum(db: Database) -> None:
    """What autovacuum does on a real server (test servers often run without it): without
    it each history's DELETEs leave dead rows that every later history's scans wade through,
    and a long run slows down history after history."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in Base.metadata.sorted_tables:
            conn.execute(sa.text(f'VACUUM "{table.name}"'))


def _truncate(db: Database) -> None:
    """Every table emptied (DELETE: a history leaves a few rows, and PostgreSQL's TRUNCATE of
    every table costs a quarter of a second)."""
    with db.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
