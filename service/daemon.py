"""The daemon: planner, event reactions, dispatcher and (optionally) the web service in one
process.

APScheduler 3 is only the in-process clock: a few interval jobs (plan, events, prune) with
``misfire_grace_time=None``, ``coalesce=True``, ``max_instances=1`` in a memory job store.
The database is the durable queue; the dispatcher has its own loop that sleeps until the next
due reminder, an event, or a finished send. On PostgreSQL a LISTEN connection makes event
reactions immediate; on SQLite the events table is polled (every second by default).

SIGTERM/SIGINT only set a flag: the main thread then stops claiming, lets in-flight sends
finish within the grace period, hands back what never started, and exits 0.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor as JobExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from service import events, handlers, migrate, planner, prompts, receipts, repair, retention
from service.app import Hearth
from service.channels import Transport, build
from service.dispatcher import Dispatcher
from service.metrics import PLANNER_DURATION
from service.models import Channel

log = structlog.get_logger("hearth.daemon")
# Modules whose reactions the event loop runs (importing them registers the reactions).
REACTING_MODULES = (repair,)
JOB_DEFAULTS = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}


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
        self.web_enabled = self.settings.daemon.run_web if web is None else web
        self.dispatcher = Dispatcher(hearth, transports or build(hearth.settings))
        self.scheduler = BackgroundScheduler(
            timezone="UTC",
            job_defaults=JOB_DEFAULTS,
            executors={"default": JobExecutor(4)},
        )
        self.stop_requested = threading.Event()
        self._threads: list[threading.Thread] = []
        self._web_server: Any = None
        self._last_event = 0
        self._events_lock = threading.Lock()

    # -- jobs -------------------------------------------------------------------------------

    def plan(self) -> None:
        cfg = self.settings.daemon
        with PLANNER_DURATION.time():
            result = planner.plan(
                self.hearth.db.write_engine,
                self.hearth.clock.now(),
                timedelta(hours=cfg.horizon_hours),
                cfg.stale_after_minutes,
            )
        log.info("planned", couples=result.couples)
        self.dispatcher.wake()

    def handle_events(self) -> int:
        """React to new domain events: replan each touched couple (one transaction each),
        then run the registered reactions. Returns how many events were seen."""
        with self._events_lock:
            with self.hearth.db.session() as s:
                batch = events.since(s, self._last_event)
            if not batch:
                return 0
            cfg = self.settings.daemon
            now = self.hearth.clock.now()
            couples = {e.couple_id for e in batch if e.type in events.REPLAN_TYPES and e.couple_id}
            for couple_id in sorted(couples):
                with self.hearth.db.write_engine.begin() as conn:
                    result = planner.replan(
                        conn,
                        now,
                        couple_id,
                        timedelta(hours=cfg.horizon_hours),
                        cfg.stale_after_minutes,
                    )
                log.info(
                    "replanned",
                    couple_id=couple_id,
                    created=result.created,
                    cancelled=result.cancelled,
                    revived=result.revived,
                )
            for ev in batch:
                handlers.react(self.hearth, ev)
            self._last_event = batch[-1].id
        self.dispatcher.wake()
        return len(batch)

    def prune(self) -> None:
        removed = retention.prune(self.hearth)
        log.info("pruned", **removed)

    def sweep_receipts(self) -> None:
        with self.hearth.db.write_engine.begin() as conn:
            applied = receipts.sweep(conn, self.hearth.clock.now())
        if applied:
            log.info("parked_receipts_applied", count=applied)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        db = self.hearth.db
        migrate.require_current(db)
        with db.session(immediate=True) as s:
            prompts.sync_builtin(s, self.hearth.clock.now())
            # Reactions are idempotent, but there is no need to replay history at start.
            self._last_event = events.last_id(s)
        self.plan()
        cfg = self.settings.daemon
        self.scheduler.add_job(self.plan, "interval", seconds=cfg.plan_interval_seconds, id="plan")
        self.scheduler.add_job(
            self.handle_events, "interval", seconds=cfg.event_poll_seconds, id="events"
        )
        self.scheduler.add_job(self.prune, "interval", hours=24, id="prune")
        self.scheduler.add_job(self.sweep_receipts, "interval", seconds=30, id="receipts")
        self.scheduler.start()
        self._spawn("dispatch", self.dispatcher.loop)
        if not db.is_sqlite:
            self._spawn("listen", self._listen)
        if self.web_enabled:
            self._start_web()
        log.info(
            "daemon_started",
            worker=self.dispatcher.worker_id,
            web=self.web_enabled,
            concurrency=cfg.concurrency,
        )

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
                    while not self.stop_requested.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
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
            lifespan="off",
        )
        self._web_server = uvicorn.Server(config)
        self._spawn("web", self._web_server.run)

    def request_stop(self, *_: Any) -> None:
        self.stop_requested.set()

    def stop(self) -> int:
        grace = self.settings.daemon.shutdown_grace_seconds
        log.info("daemon_stopping", grace_s=grace, in_flight=self.dispatcher.in_flight)
        self.stop_requested.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        left = self.dispatcher.stop(grace)
        if self._web_server is not None:
            self._web_server.should_exit = True
        for thread in self._threads:
            thread.join(timeout=5)
        self.dispatcher.close()
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
