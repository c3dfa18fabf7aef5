"""Planner throughput: 100k couples x 3 rituals over a 48 h horizon, SQLite and PostgreSQL.

Prints the planner's rate and, measured in the same run on the same table, the rate of a raw
``executemany`` of exactly the rows it produced (plain INSERT, same chunking, one transaction
per chunk). Goal: planner >= 50 % of the raw rate; peak RSS <= 500 MB.

    python -m bench.planner [--couples 100000] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from bench.common import database, peak_rss_mb, rate, reset_peak_rss, seed
from service.db.models import Reminder
from service.outbox import bulk, planner

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HORIZON = timedelta(hours=48)


def run(backend: str, couples: int) -> dict[str, float]:
    with database(backend) as db:
        t0 = time.perf_counter()
        seed(db, couples, NOW)
        print(f"[{backend}] seeded {couples:,} couples in {time.perf_counter() - t0:.1f}s")

        reset_peak_rss()  # the planner's own peak, not the seeding's or the other backend's
        t0 = time.perf_counter()
        planner.plan(db.write_engine, NOW, HORIZON, 30)
        plan_s = time.perf_counter() - t0
        rss = peak_rss_mb()
        t0 = time.perf_counter()
        planner.plan(db.write_engine, NOW, HORIZON, 30)
        replan_s = time.perf_counter() - t0

        cols = [Reminder.__table__.c[name] for name in bulk.COLUMNS]
        with db.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(sa.select(*cols).order_by(Reminder.id))]
        with db.engine.begin() as conn:
            conn.execute(sa.delete(Reminder))
        per_chunk = max(1, len(rows) * planner.CHUNK_COUPLES // couples)
        t0 = time.perf_counter()
        for lo in range(0, len(rows), per_chunk):
            with db.write_engine.begin() as conn:
                batch = bulk.adapt_rows(conn, rows[lo : lo + per_chunk])
                conn.exec_driver_sql(bulk.insert_sql(conn, on_conflict=False), batch)
        raw_s = time.perf_counter() - t0

    n = len(rows)
    ratio = raw_s / plan_s
    print(
        f"[{backend}] rows={n:,}  planner {plan_s:.2f}s ({rate(n, plan_s)})  "
        f"raw executemany {raw_s:.2f}s ({rate(n, raw_s)})  "
        f"planner/raw = {ratio:.0%} (goal >= 50%)  "
        f"idempotent re-run {replan_s:.2f}s  peak RSS {rss:.0f} MB (goal <= 500)"
    )
    return {"rows": n, "ratio": ratio, "rss_mb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--couples", type=int, default=100_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        run(backend, args.couples)


if __name__ == "__main__":
    main()
