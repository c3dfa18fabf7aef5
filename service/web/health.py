"""Health and metrics: ``/healthz`` (liveness), ``/readyz`` (readiness), ``/metrics``.

``/healthz`` answers while the process and its database answer. ``/readyz`` also wants the
schema at the newest migration and a dispatcher pass within ``daemon.tick_stale_seconds``:
read from the heartbeat every dispatcher writes to the database (service/db/daemon_state.py), so
a ``hearth web`` sees the workers' loops too; where this process dispatches as well
(``hearth serve``), its own loop must also be ticking.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from service.core.exceptions import DatabaseUnavailable, SchemaMissing
from service.core.metrics import LAST_TICK, REGISTRY
from service.db import daemon_state, migrate
from service.db.context import Hearth
from service.db.models import Reminder, ReminderState


async def healthz(request: Request) -> Response:
    hearth: Hearth = request.app.state.hearth
    try:
        await run_in_threadpool(hearth.db.check)
    except DatabaseUnavailable:
        return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


def _readiness(hearth: Hearth, expect_dispatcher: bool) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        hearth.db.check()
        checks["database"] = "ok"
        checks["migrations"] = "behind" if migrate.is_behind(hearth.db) else "ok"
    except DatabaseUnavailable:
        checks["database"] = "unreachable"
        return checks
    if checks["migrations"] == "ok":  # the heartbeat's table may not exist yet otherwise
        checks["dispatcher"] = _dispatcher(hearth, expect_dispatcher)
    return checks


def _dispatcher(hearth: Hearth, local: bool) -> str:
    """The dispatcher check: ok when some dispatcher (and, if ``local``, this process's own)
    passed within the window; none before any dispatcher ever did."""
    window = hearth.settings.daemon.tick_stale_seconds
    try:
        with hearth.db.read() as conn:
            last = daemon_state.last(conn, daemon_state.DISPATCHER)
    except (sa.exc.SQLAlchemyError, DatabaseUnavailable, SchemaMissing):
        return "unknown"
    if last is None:
        return "none"
    if hearth.clock.now() - last >= timedelta(seconds=window):
        return "stalled"
    if local and hearth.clock.now().timestamp() - LAST_TICK.last >= window:  # our loop's
        return "stalled"
    return "ok"


async def readyz(request: Request) -> Response:
    hearth: Hearth = request.app.state.hearth
    checks = await run_in_threadpool(_readiness, hearth, request.app.state.runs_dispatcher)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "error", **checks}, status_code=200 if ready else 503
    )


class OutboxCollector(Collector):
    """Outbox depth by state and the age of the oldest due-but-unsent reminder, read from
    the database at scrape time (so every process reports the shared queue)."""

    def __init__(self, hearth: Hearth) -> None:
        self.hearth = hearth

    def collect(self):  # type: ignore[no-untyped-def]
        depth = GaugeMetricFamily("hearth_outbox_depth", "Reminders by state", labels=["state"])
        oldest = GaugeMetricFamily(
            "hearth_outbox_oldest_due_seconds", "Age of the oldest due, unsent reminder"
        )
        now = self.hearth.clock.now()
        try:
            with self.hearth.db.engine.connect() as conn:
                counts = dict(
                    conn.execute(
                        sa.select(Reminder.state, sa.func.count()).group_by(Reminder.state)
                    ).all()
                )
                first = conn.scalar(
                    sa.select(sa.func.min(Reminder.next_attempt_at)).where(
                        Reminder.state.in_([ReminderState.SCHEDULED, ReminderState.SENDING]),
                        Reminder.next_attempt_at <= now,
                    )
                )
        except Exception:
            return
        for state in ReminderState:
            depth.add_metric([state.value], counts.get(state, 0))
        yield depth
        oldest.add_metric([], (now - first).total_seconds() if first else 0.0)
        yield oldest


def metrics_endpoint(hearth: Hearth) -> Route:
    from prometheus_client import CollectorRegistry

    local = CollectorRegistry(auto_describe=False)
    local.register(OutboxCollector(hearth))

    async def metrics(request: Request) -> Response:
        # Only at the exact path: the router matches the decoded one, so /%6detrics would
        # land here too, past a proxy rule that blocks /metrics by its spelling.
        if request.scope.get("raw_path", b"/metrics") != b"/metrics":
            raise HTTPException(404)
        body = await run_in_threadpool(lambda: generate_latest(REGISTRY) + generate_latest(local))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics, methods=["GET"])


routes: list[BaseRoute] = [
    Route("/healthz", healthz, methods=["GET", "HEAD"]),
    Route("/readyz", readyz, methods=["GET", "HEAD"]),
]
