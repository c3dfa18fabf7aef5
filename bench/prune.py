"""Prune while the dispatchers write: how long a claim waits behind a big first prune.

A year of history is seeded into a SQLite file (the one-writer database, where a long prune
transaction blocks every other write): ``--couples`` couples x 3 rituals x 2 partners, their
reminders planned, then marked sent 400 days ago. The file is copied, and on each copy one
prune runs while a second thread does what a dispatcher does between sends: a short write
transaction (``BEGIN IMMEDIATE``, one UPDATE) every 20 ms, timing how long each waits.

Figures, measured in this one run: the prune's own time, and the writer's worst and p99
wait, for Hearth's chunked prune (``retention.CHUNK`` rows per transaction, resting
``retention.REST`` of each chunk's time) and for the same prune as one transaction with no
rest (the baseline: how Hearth pruned before, with today's statements). Goal: the writer's
worst wait with chunks stays under 1 s (the dispatchers' lock timeout is 30 s). The chunked
prune's extra time is printed as its cost; a background prune has no deadline to meet.

    python -m bench.prune [--couples 30000]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from bench.common import database, seed
from service.db.engine import Database
from service.db.models import Reminder, ReminderState, table
from service.outbox import planner, retention

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
WRITE_EVERY = 0.02  # seconds between the writer's transactions


def _writer(db: Database, stop: threading.Event, waits: list[float]) -> None:
    t = table(Reminder)
    while not stop.is_set():
        t0 = time.perf_counter()
        with db.begin() as conn:  # BEGIN IMMEDIATE: waits for the write lock as a claim does
            conn.execute(t.update().where(t.c.id == -1).values(attempts=0))
        waits.append(time.perf_counter() - t0)
        stop.wait(WRITE_EVERY)


def measure(path: Path, chunk: int, rest: float) -> tuple[float, float, float, int, dict[str, int]]:
    """(prune seconds, writer worst wait, writer p99 wait, writes, rows removed)."""
    db = Database(f"sqlite:///{path}")
    try:
        stop = threading.Event()
        waits: list[float] = []
        writer = threading.Thread(target=_writer, args=(db, stop, waits), daemon=True)
        writer.start()
        time.sleep(0.2)  # the writer is under way before the prune starts
        t0 = time.perf_counter()
        later = NOW + timedelta(days=400)
        removed = retention.prune_in_chunks(db, later, 365, chunk=chunk, rest=rest)
        seconds = time.perf_counter() - t0
        time.sleep(0.2)
        stop.set()
        writer.join(60)
    finally:
        db.dispose()
    ordered = sorted(waits)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return seconds, ordered[-1], p99, len(waits), removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--couples", type=int, default=30_000)
    args = parser.parse_args()
    with database("sqlite") as db:
        seed(db, args.couples, NOW)
        planner.plan(db.write_engine, NOW, timedelta(hours=48), 30)
        t = table(Reminder)
        with db.begin() as conn:
            conn.execute(t.update().values(state=ReminderState.SENT, sent_at=t.c.due_at))
            rows = conn.scalar(sa.select(sa.func.count()).select_from(t))
        db.dispose()
        source = Path(str(db.engine.url.database))
        raw = sqlite3.connect(source)  # everything in the main file, so a copy has it all
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw.close()
        print(f"seeded {args.couples:,} couples, {rows:,} sent reminders a year old")
        runs = {}
        variants = (
            ("one transaction", 10**9, 0.0),
            (f"chunks of {retention.CHUNK}", retention.CHUNK, retention.REST),
        )
        for label, chunk, rest in variants:
            copy = source.with_name(f"copy-{chunk}.db")
            shutil.copy(source, copy)
            runs[label] = measure(copy, chunk, rest)
            secs, worst, p99, n, removed = runs[label]
            print(
                f"{label:<18} prune {secs:6.2f}s ({removed['reminders']:,} reminders)  "
                f"writer: {n} writes, worst wait {worst * 1000:7.1f} ms, "
                f"p99 {p99 * 1000:6.1f} ms",
                flush=True,
            )
        single, chunked = runs["one transaction"], runs[f"chunks of {retention.CHUNK}"]
        verdict = "PASS" if chunked[1] < 1.0 else "MISS"
        print(
            f"{verdict}  writer's worst wait with chunks: {chunked[1] * 1000:.0f} ms "
            f"(one transaction: {single[1] * 1000:.0f} ms), goal < 1000 ms"
        )
        print(
            f"cost: the chunked prune takes {chunked[0] / single[0]:.2f}x the single "
            f"transaction (it rests {retention.REST:.0%} of each chunk's time by design)"
        )


if __name__ == "__main__":
    main()
