"""Scale-out: one, two and four ``hearth worker`` processes on one PostgreSQL database.

Each run seeds the same burst (20k reminders by default) into a fresh schema, starts the
workers (real ``python -m cli worker`` processes, as production runs them) and, once all of
them are up, makes every reminder due at the same moment. The Twilio stand-in answers in a
process of its own after ``--latency`` seconds. Figures, all from this one run:

* throughput (reminders sent per second from the due moment to the last ``sent_at``) and
  its ratio to the one-worker run; goal: two workers >= 1.6x one worker;
* lateness p50/p99 (``sent_at - due_at``);
* lost (never requested at the stand-in) and duplicated (requested twice); goal 0 and 0;
* CPU seconds the workers used per 1,000 sends.

    python -m bench.scale [--count 20000] [--workers 1,2,4] [--concurrency 50] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from bench.burst import RemoteStandIn
from bench.common import database, seed
from service.db.engine import Database
from service.db.models import Reminder, ReminderState
from service.outbox import planner
from tests.peers.twilio_standin import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN


@dataclass
class Run:
    workers: int
    n: int
    seconds: float
    lateness: list[float]
    lost: int
    duplicated: int
    cpu: float

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0

    def line(self, base: Run | None) -> str:
        lat = sorted(self.lateness) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        ratio = f" = {self.rate / base.rate:.2f}x one worker" if base and base.rate else ""
        return (
            f"{self.workers} worker(s): {self.n:>6} in {self.seconds:6.1f}s {self.rate:7.1f}/s"
            f"{ratio}  lateness p50 {statistics.median(lat):5.1f}s p99 {p99:5.1f}s  "
            f"lost {self.lost}  duplicated {self.duplicated}  "
            f"cpu {self.cpu / max(1, self.n) * 1000:.2f} s per 1k sends"
        )


def _env(db: Database, base_url: str, concurrency: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env.update(
        HEARTH_DATABASE_URL=db.url,
        HEARTH_DAEMON_RUN_WEB="false",
        HEARTH_DAEMON_CONCURRENCY=str(concurrency),
        HEARTH_DAEMON_STALE_AFTER_MINUTES="120",
        HEARTH_LOG_LEVEL="warning",
        HEARTH_CHANNELS_SMS="twilio",
        HEARTH_TWILIO_ACCOUNT_SID=DEFAULT_ACCOUNT_SID,
        HEARTH_TWILIO_AUTH_TOKEN=DEFAULT_AUTH_TOKEN,
        HEARTH_TWILIO_FROM_NUMBER="+15005550006",
        HEARTH_TWILIO_API_BASE_URL=base_url,
        HEARTH_TWILIO_SENDER_RATE_PER_SECOND="1000000",
        HEARTH_TWILIO_ACCOUNT_RATE_PER_SECOND="1000000",
    )
    return env


def _count(db: Database, state: ReminderState) -> int:
    with db.engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).where(Reminder.state == state)) or 0)


def scale_run(count: int, workers: int, concurrency: int, latency: float) -> Run:
    with (
        database("postgres") as db,
        RemoteStandIn(latency) as standin,
        tempfile.TemporaryDirectory() as tmp,
    ):
        now = datetime.now(UTC)
        # Planned for tomorrow, so no worker starts early; made due below once all run.
        seed(
            db,
            count,
            now,
            partners=1,
            channel="sms",
            one_off_at=now + timedelta(days=1),
            templates=(),
        )
        planner.plan(db.write_engine, now, timedelta(hours=48), 120)
        env = _env(db, standin.base_url, concurrency)
        procs: list[subprocess.Popen[bytes]] = []
        outs = [Path(tmp) / f"worker{i}.out" for i in range(workers)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for out in outs:
            with out.open("wb") as sink:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "cli", "worker"],
                        env=env,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + 120
        while not all(b"running" in o.read_bytes() for o in outs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit("workers did not start:\n" + outs[0].read_text())
            time.sleep(0.2)  # polling outside processes
        time.sleep(3)  # their first plan pass (nothing new) and first claim pass
        due = datetime.now(UTC)
        with db.engine.begin() as conn:
            conn.execute(
                sa.update(Reminder)
                .where(Reminder.state == ReminderState.SCHEDULED)
                .values(due_at=due, next_attempt_at=due)
            )
        deadline = time.monotonic() + 900
        while _count(db, ReminderState.SENT) < count and time.monotonic() < deadline:
            time.sleep(0.25)  # polling the database for completion (real time)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        with db.engine.connect() as conn:
            rows = conn.execute(
                sa.select(Reminder.due_at, Reminder.sent_at).where(Reminder.sent_at.is_not(None))
            ).all()
        numbers = [r.to for r in standin.requests()]
    lateness = [(s - d).total_seconds() for d, s in rows if s is not None]
    last = max((s for _, s in rows if s is not None), default=due)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Run(
        workers,
        len(rows),
        (last - due).total_seconds(),
        lateness,
        count - len(set(numbers)),
        len(numbers) - len(set(numbers)),
        cpu,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    bound = args.concurrency / args.latency
    print(
        f"{args.count} reminders, concurrency {args.concurrency} per worker, stand-in at "
        f"{args.latency * 1000:.0f} ms: bound {bound:.0f}/s per worker",
        flush=True,
    )
    base: Run | None = None
    for k in (int(x) for x in args.workers.split(",")):
        run = scale_run(args.count, k, args.concurrency, args.latency)
        base = base or run
        print(run.line(base) + f"  ({run.rate / (k * bound):.0%} of {k} x bound)", flush=True)


if __name__ == "__main__":
    main()
