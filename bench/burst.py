"""Burst delivery: 10k reminders due at the same moment, Twilio stand-in with 200 ms latency.

Figures, all measured in this one run:
1. Hearth's dispatcher at concurrency 50: throughput against the bound concurrency / latency
   (250/s; goal >= 80 %), lost and duplicated (goal 0), p50/p99 lateness.
2. The same at concurrency 200 (near-linear scaling expected).
3. Pacing at 100/s: the achieved rate (goal within 2 % of 100/s).
4. The naive alternative: APScheduler 3 with one DateTrigger job per reminder in a
   SQLAlchemyJobStore and its default 10-thread executor, once with default settings and once
   with ``misfire_grace_time=None``: throughput, lateness, jobs lost. Goal: Hearth >= 4x the
   tuned peer's throughput with none lost.

The stand-in runs in its own process (as the real API runs elsewhere); Hearth's side runs in
this one, as the daemon does.

    python -m bench.burst [--count 10000] [--latency 0.2] [--skip-naive]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from bench.common import database, seed
from bench.stock_twilio import close_stock, stock_client
from service.channels import build
from service.channels.twilio_http import make_client
from service.core.clock import SystemClock
from service.core.config import LogSettings, Settings
from service.core.logs import configure
from service.db.context import Hearth
from service.db.models import Reminder, ReminderState
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from tests.peers.twilio_standin import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    RecordedRequest,
    TwilioStandIn,
    num_segments,
)

T = TypeVar("T")


def _present(value: T | None, what: str) -> T:
    """``value``, which the query or the stand-in guarantees is there (narrows the type)."""
    assert value is not None, f"{what} is missing"
    return value


class RemoteStandIn:
    """The Twilio stand-in in a process of its own. The real API spends none of Hearth's CPU;
    a stand-in sharing this process's GIL with the dispatcher would cap every figure at the
    stand-in's own speed rather than Hearth's."""

    def __init__(self, latency: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_standin, args=(child, latency), daemon=True)
        self.base_url = ""

    def __enter__(self) -> RemoteStandIn:
        self._proc.start()
        self.base_url = self._conn.recv()
        return self

    def requests(self) -> list[RecordedRequest]:
        self._conn.send("requests")
        got: list[RecordedRequest] = self._conn.recv()
        return got

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self._proc.join(10)


def _serve_standin(conn: Connection, latency: float) -> None:
    with TwilioStandIn() as standin:
        standin.latency = latency
        conn.send(standin.base_url)
        while conn.recv() != "stop":
            conn.send(standin.requests)


@dataclass
class Result:
    label: str
    n: int
    seconds: float
    lateness: list[float]
    lost: int
    duplicated: int
    segments: int = 0

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0

    def line(self, bound: float | None = None) -> str:
        lat = sorted(self.lateness) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        vs = f" = {self.rate / bound:.0%} of bound {bound:.0f}/s" if bound else ""
        return (
            f"{self.label:<44} {self.n:>6} in {self.seconds:6.1f}s  {self.rate:7.1f}/s{vs}  "
            f"lateness p50 {statistics.median(lat):5.1f}s p99 {p99:5.1f}s  "
            f"lost {self.lost}  duplicated {self.duplicated}"
        )


def hearth_burst(
    count: int, latency: float, concurrency: int, pace: float | None = None, label: str = ""
) -> Result:
    with database("sqlite") as db, RemoteStandIn(latency) as standin:
        now = datetime.now(UTC)
        due = now + timedelta(seconds=4 + count / 5000)
        seed(db, count, now, partners=1, channel="sms", one_off_at=due, templates=())
        planner.plan(db.write_engine, now, timedelta(hours=48), 30)
        settings = Settings(
            database={"url": db.url},
            channels={"sms": "twilio"},
            twilio={
                "account_sid": DEFAULT_ACCOUNT_SID,
                "auth_token": DEFAULT_AUTH_TOKEN,
                "from_number": "+15005550006",
                "api_base_url": standin.base_url,
                "sender_rate_per_second": pace or 1e6,
                "account_rate_per_second": pace or 1e6,
            },
            daemon={"concurrency": concurrency, "stale_after_minutes": 120},
            log={"level": "warning"},
        )
        hearth = Hearth(settings=settings, db=db, clock=SystemClock())
        dispatcher = Dispatcher(hearth, build(settings))
        loop = threading.Thread(target=dispatcher.loop, daemon=True)
        loop.start()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with db.engine.connect() as conn:
                done = conn.scalar(
                    sa.select(sa.func.count()).where(Reminder.state == ReminderState.SENT)
                )
            if done == count:
                break
            time.sleep(0.25)  # polling for completion; the clock is real here
        dispatcher.stop(10)
        loop.join(10)
        dispatcher.close()
        with db.engine.connect() as conn:
            sent_rows = conn.execute(
                sa.select(Reminder.due_at, Reminder.sent_at).where(Reminder.sent_at.is_not(None))
            ).all()
        rows = [(d, _present(sent, "sent_at")) for d, sent in sent_rows]
        requests = standin.requests()
        numbers = [r.to for r in requests]
        # Hearth sends no media and the stand-in refuses a bodiless text (21602): all have one.
        segments = sum(num_segments(_present(r.body, "body")) for r in requests if r.ok)
    lateness = [(sent - d).total_seconds() for d, sent in rows]
    last = max((sent for _, sent in rows), default=due)
    return Result(
        label or f"hearth, concurrency {concurrency}",
        len(rows),
        (last - due).total_seconds(),
        lateness,
        count - len(set(numbers)),
        len(numbers) - len(set(numbers)),
        segments,
    )


def client_ceiling(count: int, latency: float, threads: int) -> float:
    """Sends/s of the bare, stock twilio client from ``threads`` threads in this process,
    with no Hearth at all: what a dispatcher built on it could reach here (CPU and GIL
    bound). Hearth's own lean path underneath the same client can go beyond it."""
    with RemoteStandIn(latency) as standin:
        # The stock client (requests underneath), as a team would use it: the reference.
        client = stock_client(
            DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, standin.base_url, 10, pool_size=threads
        )

        def send(i: int) -> None:
            client.messages.create(to=f"+1415{i:07d}", from_="+15005550006", body="Ritual time")

        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(send, range(count)))
        seconds = time.perf_counter() - t0
        close_stock(client)
    return count / seconds


# -- the naive alternative -----------------------------------------------------------------

_naive: dict[str, Any] = {}


def naive_send(to: str) -> None:
    """The job APScheduler runs for one reminder (module-level: the job store pickles it)."""
    _naive["client"].messages.create(to=to, from_="+15005550006", body="Time for your ritual")
    with _naive["lock"]:
        _naive["sent_at"].append(time.time())


def naive_burst(count: int, latency: float, misfire_grace_time: Any, label: str) -> Result:
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    # One warning per missed job would bury the figures; the listener below counts them.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp, RemoteStandIn(latency) as standin:
        _naive.update(
            client=make_client(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, standin.base_url, 10),
            lock=threading.Lock(),
            sent_at=[],
        )
        store = SQLAlchemyJobStore(url=f"sqlite:///{Path(tmp) / 'jobs.db'}")
        defaults: dict[str, Any] = {}
        if misfire_grace_time != "default":
            defaults["misfire_grace_time"] = misfire_grace_time
        sched = BackgroundScheduler(jobstores={"default": store}, job_defaults=defaults)
        settled = {"n": 0, "missed": 0}
        lock = threading.Lock()

        def listener(event: Any) -> None:
            with lock:
                settled["n"] += 1
                if event.code == EVENT_JOB_MISSED:
                    settled["missed"] += 1

        sched.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_ERROR)
        sched.start()
        # Adding a job is a write to the job store: time a sample to know when all are in.
        t0 = time.monotonic()
        far = datetime.now(UTC) + timedelta(days=1)
        for i in range(50):
            sched.add_job(naive_send, "date", run_date=far, args=[f"+1415{i:07d}"], id=f"s{i}")
        per_job = (time.monotonic() - t0) / 50
        for i in range(50):
            sched.remove_job(f"s{i}")
        due = datetime.now(UTC) + timedelta(seconds=per_job * count * 1.3 + 3)
        for i in range(count):
            sched.add_job(naive_send, "date", run_date=due, args=[f"+1415{i:07d}"], id=f"j{i}")
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline:
            with lock:
                if settled["n"] >= count:
                    break
            time.sleep(0.25)
        sched.shutdown(wait=True)
        sent = sorted(_naive["sent_at"])
        numbers = [r.to for r in standin.requests()]
        _naive["client"].http_client.close()
    due_ts = due.timestamp()
    return Result(
        label,
        len(sent),
        (sent[-1] - due_ts) if sent else 0.0,
        [t - due_ts for t in sent],
        count - len(set(numbers)),
        len(numbers) - len(set(numbers)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--pace-count", type=int, default=2000)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    configure(LogSettings(level="warning"))
    n, lat = args.count, args.latency
    r50 = hearth_burst(n, lat, 50)
    print(r50.line(bound=50 / lat), flush=True)
    r200 = hearth_burst(n, lat, 200)
    print(r200.line(bound=200 / lat), flush=True)
    print(f"scaling 50 -> 200: {r200.rate / r50.rate:.2f}x (4x would be linear)", flush=True)
    for threads, r in ((50, r50), (200, r200)):
        ceiling = client_ceiling(min(n, 4000), lat, threads)
        print(
            f"bare twilio client, {threads} threads, no Hearth: {ceiling:.1f}/s "
            f"(hearth at {threads} reaches {r.rate / ceiling:.0%} of it)",
            flush=True,
        )
    paced = hearth_burst(
        args.pace_count, lat, 50, pace=100, label="hearth, paced at 100 segments/s"
    )
    seg_rate = paced.segments / paced.seconds
    print(paced.line(), flush=True)
    print(f"paced: {seg_rate:.1f} segments/s -> {seg_rate / 100 - 1:+.1%} vs 100/s", flush=True)
    if args.skip_naive:
        return
    default = naive_burst(n, lat, "default", "apscheduler jobstore, defaults")
    print(default.line(), flush=True)
    tuned = naive_burst(n, lat, None, "apscheduler jobstore, misfire_grace_time=None")
    print(tuned.line(), flush=True)
    if tuned.rate:
        print(f"hearth (50) vs tuned apscheduler: {r50.rate / tuned.rate:.1f}x (goal >= 4x)")


if __name__ == "__main__":
    main()
