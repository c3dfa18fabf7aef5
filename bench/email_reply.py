"""What the per-partner Reply-To costs on the send path: rendering a batch of email
reminders (``outbox/compose.render``, as the dispatcher's prepare does) without a reply
mailbox (the baseline) and with one (each email derives ``hearth+<token>@...``), in one
process, on the same rows, the two taking turns in rounds so drift weighs on both. Each
round renders the batch in a transaction that is rolled back, so every round does the same
work.

    python -m bench.email_reply [--couples 500] [--rounds 6] [--backend sqlite|postgres]
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from bench.common import database, seed
from service.core.crypto import Keyring
from service.db.engine import Database
from service.db.models import Channel, Reminder
from service.domain import reply_address
from service.domain.unsubscribe import server_key
from service.outbox import compose, planner

NOW = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
BASE_URL = "https://hearth.example.org"


def _round(db: Database, reply_base: str) -> tuple[float, int]:
    """CPU milliseconds per rendered email (process time: the neighbours do not count), and
    how many were rendered."""
    with db.session() as s:
        rows = list(
            s.scalars(sa.select(Reminder).where(Reminder.channel == Channel.EMAIL).limit(1000))
        )
        batch = compose.Batch(s, rows, NOW)
        rng, keys = random.Random(1), Keyring.from_text("")
        t0 = time.process_time()
        for r in rows:
            compose.render(s, r, batch, NOW, rng, BASE_URL, keys, reply_base)
        took = time.process_time() - t0
        s.rollback()
    return took / max(1, len(rows)) * 1000, len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--couples", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    args = ap.parse_args()
    with database(args.backend) as db:
        seed(db, args.couples, NOW, templates=("five-minute-check-in",), channel="email")
        planner.plan(db.write_engine, NOW, timedelta(hours=24), 30)
        with db.session() as s:  # the reply key exists from the first send on
            server_key(s, reply_address.KEY_NAME)
        _round(db, "")  # warm-up: statement caches
        base: list[float] = []
        reply: list[float] = []
        n = 0
        for _ in range(args.rounds):
            ms, n = _round(db, "")
            base.append(ms)
            ms, n = _round(db, "hearth@example.org")
            reply.append(ms)
    b, r = min(base), min(reply)
    print(f"emails rendered per round: {n} ({args.backend})")
    print(f"baseline (no reply mailbox):  {b:.3f} ms per email (best of {args.rounds})")
    print(f"with per-partner Reply-To:     {r:.3f} ms per email (best of {args.rounds})")
    print(f"ratio with/without: {r / b:.3f}")


if __name__ == "__main__":
    main()
