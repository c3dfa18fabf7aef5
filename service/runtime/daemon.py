"""The daemon: planner, event reactions, dispatcher and (optionally) the web service in one
process.

APScheduler 3 is only the in-process clock: a few interval jobs (plan, events, prune) with
``misfire_grace_time=None``, ``coalesce=True``, ``max_instances=1`` in a memory job store.
The database is the durable queue; the dispatcher has its own loop that sleeps until the next
due reminder, an event, or a finished send. On PostgreSQL a LISTEN connection makes event
reactions immediate; on SQLite the events table is polled (every second by default).

SIGTERM/SIGINT only set a flag: the main thread then stops claiming, hands back at once what
was claimed but not started, lets running sends finish within the grace period (recording
each outcome, also of a send that ends after it), and exits 0.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor as JobExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from service.channels import Transport, build
from service.core.exceptions import ConfigError
from service.core.metrics import PLANNER_DURATION, REGISTRY, UNPLANNABLE, observe_forecast
from service.db import daemon_state, migrate, optouts
from service.db.context import Hearth
from service.db.models import Channel, Event
from service.domain import events, prompts
from service.outbox import capacity, leveling, planner, receipts, retention
from service.outbox.dispatcher import Dispatcher
from service.replies import reactions, repair
from service.replies.mailbox import MailboxWorker
from service.runtime.event_cursor import EventCursor
from service.runtime.replans import Replans

log = structlog.get_logger("hearth.daemon")
# Modules whose reactions the event loop runs (importing them registers the reactions).
REACTING_MODULES = (repair,)
JOB_DEFAULTS = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}
# The prune job looks every minute (so a daemon restarted more often than daily still
# prunes; a look is one conditional upsert) whether a day passed since any daemon last
# pruned. 23 h, not 24: the looks drift, and a 24 h claim would then skip every other day.
PRUNE_CHECK = timedelta(minutes=1)
# How often the capacity forecast of the next 24 h refreshes its gauges.
FORECAST_EVERY = timedelta(minutes=5)
PRUNE_AGAIN_AFTER = timedelta(hours=23)


class Daemon:
    def __init__(
        self,
        hearth: Hearth,
        *,
        transports: dict[Channel, Transport] | None = None,
        web: bool | None = None,
    ) -> None:
        self.hearth = hearth
        self.settings = hearth.settings
        self.shape = planner.Shape.of(self.settings.daemon, self.settings.delivery)
        self.web_enabled = self.settings.daemon.run_web if web is None else web
        self.dispatcher = Dispatcher(hearth, transports or build(hearth.settings, hearth.clock))
        self._jobs = JobExecutor(4)
        self.scheduler = BackgroundScheduler(
            timezone="UTC",
            job_defaults=JOB_DEFAULTS,
            executors={"default": self._jobs},
        )
        self.stop_requested = threading.Event()
        self._threads: list[threading.Thread] = []
        self._web_server: Any = None
        self._metrics_server: Any = None
        self._events = EventCursor(hearth.clock.monotonic)
        self.replans = Replans(hearth.clock.monotonic)
        self._events_lock = threading.Lock()

    # -- jobs -------------------------------------------------------------------------------

    def plan(self) -> None:
        with PLANNER_DURATION.time():
            now = self.hearth.clock.now()
            result = planner.plan(self.hearth.db, now, **self.shape._asdict())
        UNPLANNABLE.set(len(result.unplannable))
        self.level()
        log.info("planned", couples=result.couples, unplannable=len(result.unplannable))
        self.dispatcher.wake()

    def level(self, couple_ids: list[int] | None = None) -> None:
        """Give the planned nudges their send slots (service/outbox/leveling.py): all of
        them after a planning pass, those near the replanned couples' after an edit."""
        now = self.hearth.clock.now()
        with self.hearth.db.begin() as conn:
            moved = leveling.level(conn, now, self.settings, self.shape.horizon, couple_ids)
        log.info("leveled", moved=moved)

    def forecast(self) -> None:
        """The capacity forecast of the next 24 h into the metrics (an alert rule watches)."""
        with self.hearth.db.engine.connect() as conn:
            f = capacity.forecast(conn, self.hearth.clock.now(), self.settings, days=1)
        for name, pool in f.pools.items():
            observe_forecast(name, pool.worst_late_seconds, pool.expired)
        log.info("forecast", worst_late_s=round(f.worst_late_seconds, 1), expired=f.expired)

    def handle_events(self) -> int:
        """React to new domain events: replan each touched couple (one transaction each;
        one that fails waits for a retry, service/runtime/replans.py), then run the
        registered reactions. Returns how many events were seen."""
        with self._events_lock:
            with self.hearth.db.session() as s:
                batch = self._events.fetch(s)
            asked: dict[int, list[int]] = {}
            for e in batch:
                if e.type in events.REPLAN_TYPES and e.couple_id:
                    asked.setdefault(e.couple_id, []).append(e.id)
            self.replans.run(asked, self._replan, asked)  # also the retries now due
            if not batch:
                self._events_handled([])  # a gap's wait may have run out
                return 0
            for ev in batch:
                reactions.react(self.hearth, ev)
            self._events_handled(batch)
        self.dispatcher.wake()
        return len(batch)

    def _replan(self, couple_id: int) -> None:
        with self.hearth.db.begin() as conn:
            now = self.hearth.clock.now()
            result = planner.replan(conn, now, couple_id, **self.shape._asdict())
        self.level([couple_id])
        log.info(
            "replanned",
            couple_id=couple_id,
            created=result.created,
            cancelled=result.cancelled,
            revived=result.revived,
        )

    def _events_handled(self, batch: list[Event]) -> None:
        self._events.handled(e.id for e in batch)
        try:
            with self.hearth.db.begin() as conn:
                self._events.save(conn, self.hearth.clock.now())
        except Exception:
            # The events are handled; a watermark stored late only means a longer replay.
            log.exception("event_watermark_not_saved", watermark=self._events.floor)

    def prune(self) -> dict[str, int] | None:
        """Prune unless some daemon did within PRUNE_AGAIN_AFTER. Of racing workers one
        claims the day's run (on PostgreSQL the others wait for its commit, then find the
        claim fresh); it prunes in chunks (retention.CHUNK), and a prune that fails gives
        its claim back, so the next look, a minute later, goes on where it stopped."""
        now = self.hearth.clock.now()
        with self.hearth.db.begin() as conn:
            if not daemon_state.claim(conn, daemon_state.PRUNE, now, PRUNE_AGAIN_AFTER):
                return None
        try:
            removed = retention.prune_in_chunks(
                self.hearth.db, now, self.settings.retention.days, stop=self.stop_requested
            )
        except BaseException:
            self._give_back_prune(now)
            raise
        if self.stop_requested.is_set():
            self._give_back_prune(now)  # cut short by the stop: the next start goes on
            log.info("prune_interrupted", **removed)
            return removed
        log.info("pruned", **removed)
        return removed

    def _give_back_prune(self, claimed_at: datetime) -> None:
        try:
            with self.hearth.db.begin() as conn:
                daemon_state.release(conn, daemon_state.PRUNE, claimed_at)
        except Exception:
            # The database is away: the claim stands, and the prune waits for tomorrow.
            log.exception("prune_claim_not_given_back")

    def sweep_receipts(self) -> None:
        with self.hearth.db.begin() as conn:
            applied = receipts.sweep(conn, self.hearth.clock.now(), self.dispatcher.backoff)
        if applied:
            log.info("parked_receipts_applied", count=applied)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        db = self.hearth.db
        migrate.require_current(db)
        if not self.web_enabled and self.settings.daemon.metrics_port:
            self._start_metrics()  # first: a port in use stops the start, before any thread
        with db.session(immediate=True) as s:
            prompts.sync_builtin(s, self.hearth.clock.now())
        if not self.hearth.keys.configured:
            # Partners' words are then not kept at all, and the shared question takes none.
            log.warning(
                "encryption_keys_missing",
                hint="`hearth init` writes a key file; see docs/configuration.md, [encryption]",
            )
        self.catch_up()
        self.plan()
        repair.schedule_pending(self.hearth)
        cfg = self.settings.daemon
        self.scheduler.add_job(self.plan, "interval", seconds=cfg.plan_interval_seconds, id="plan")
        self.scheduler.add_job(
            self.handle_events, "interval", seconds=cfg.event_poll_seconds, id="events"
        )
        self.scheduler.add_job(
            self.prune, "interval", seconds=PRUNE_CHECK.total_seconds(), id="prune"
        )
        self.scheduler.add_job(self.sweep_receipts, "interval", seconds=30, id="receipts")
        self.scheduler.add_job(
            self.forecast,
            "interval",
            seconds=FORECAST_EVERY.total_seconds(),
            id="forecast",
        )
        # Repair requests made while no daemon ran (or whose planning failed) are not lost.
        self.scheduler.add_job(
            repair.schedule_pending, "interval", args=[self.hearth], seconds=30, id="repairs"
        )
        self.scheduler.start()
        self._spawn("dispatch", self.dispatcher.loop)
        if not db.is_sqlite:
            self._spawn("listen", self._listen)
        if self.settings.imap.enabled:
            # Email replies: one thread on the reply mailbox (IDLE, or polling).
            worker = MailboxWorker(self.hearth, self.stop_requested, self.dispatcher.wake)
            self._spawn("mailbox", worker.run)
        if self.web_enabled:
            self._start_web()
        log.info(
            "daemon_started",
            worker=self.dispatcher.worker_id,
            web=self.web_enabled,
            concurrency=cfg.concurrency,
        )

    def catch_up(self) -> None:
        """Handle the events recorded since the stored watermark: what changed while no
        daemon ran (an edit, a move, a pause) is replanned before the first send. The plan
        pass only adds rows; it never cancels or retimes an outdated one."""
        horizon = self.shape.horizon + timedelta(days=1)
        with self.hearth.db.begin() as conn:
            self._events.load(conn, self.hearth.clock.now(), horizon)
        while self.handle_events():
            pass

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"hearth-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _listen(self) -> None:
        """PostgreSQL: wake the event job as soon as a NOTIFY arrives."""
        import psycopg

        url = self.hearth.db.engine.url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while not self.stop_requested.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {events.CHANNEL}")
                    conn.execute(f"LISTEN {optouts.CHANNEL}")
                    optouts.bump()  # an opt-out missed while (re)connecting: read again
                    while not self.stop_requested.is_set():
                        for note in conn.notifies(timeout=1.0, stop_after=1):
                            if note.channel == optouts.CHANNEL:
                                optouts.bump()  # a STOP in another process: look again
                            else:
                                self.handle_events()
            except Exception:
                log.exception("listen_failed")
                self.stop_requested.wait(2.0)

    def _start_web(self) -> None:
        import uvicorn

        from service.web import create_app

        web = self.settings.web
        config = uvicorn.Config(
            create_app(self.hearth, runs_dispatcher=True),
            host=web.host,
            port=web.port,
            log_config=None,
            access_log=False,
            lifespan="on",  # closes what the app holds open (service.web._lifespan)
        )
        self._web_server = uvicorn.Server(config)
        self._spawn("web", self._web_server.run)

    def _start_metrics(self) -> None:
        """``/metrics`` of this process (its dispatcher and planner figures) for a worker,
        which has no web service. Outbox depth is left to the web service's ``/metrics``:
        it is the same shared queue from every process."""
        from prometheus_client import start_http_server

        cfg = self.settings.daemon
        try:
            self._metrics_server, _ = start_http_server(
                cfg.metrics_port, addr=cfg.metrics_host, registry=REGISTRY
            )
        except OSError as exc:
            raise ConfigError(
                "daemon.metrics_port",
                f"cannot listen on {cfg.metrics_host}:{cfg.metrics_port}: {exc.strerror}",
            ) from None
        log.info("metrics_listening", host=cfg.metrics_host, port=cfg.metrics_port)

    def request_stop(self, *_: Any) -> None:
        self.stop_requested.set()

    def stop(self) -> int:
        """Stop within ``shutdown_grace_seconds``: claiming ends first; rows claimed but not
        started go back at once; running sends get what is left of the grace period, and one
        that ends later still records its outcome (see ``Dispatcher.close``)."""
        grace = self.settings.daemon.shutdown_grace_seconds
        deadline = self.hearth.clock.monotonic() + grace
        log.info("daemon_stopping", grace_s=grace, in_flight=self.dispatcher.in_flight)
        self.stop_requested.set()
        self.dispatcher.stopping.set()  # before anything else: not one more claim
        if self.scheduler.running:
            # Without waiting: a planning pass under way must not use up the grace period.
            self.scheduler.shutdown(wait=False)
        left = self.dispatcher.stop(max(0.0, deadline - self.hearth.clock.monotonic()))
        if self._web_server is not None:
            self._web_server.should_exit = True
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        # The threads get what is left of the grace period, and a moment to see the flag.
        join_until = max(deadline, self.hearth.clock.monotonic() + 1.0)
        for thread in self._threads:
            thread.join(timeout=max(0.0, join_until - self.hearth.clock.monotonic()))
        self.dispatcher.close()
        # A job still running (a planning pass, say) would hold the exit anyway: the
        # interpreter waits for the pool's threads. Waiting here keeps that in order, after
        # the sends, instead of leaving it to run on behind a "stopped" line.
        self._jobs.shutdown(wait=True)
        log.info("daemon_stopped", unfinished=left)
        return left

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; returns the exit status."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        while not self.stop_requested.wait(1.0):
            pass
        self.stop()
        return 0
