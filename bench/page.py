"""Partner page throughput and query count: the real app under uvicorn in its own process,
as ``bench/feeds.py`` serves it, on a SQLite file.

Endpoints, interleaved in rounds in the same run against the same server:

- ``/ping``: a trivial route added to the app instance here (no threadpool, no database),
  the issue's reference: "the same app's trivial endpoint";
- ``/healthz``: a threadpool hop and ``SELECT 1``, a second reference;
- ``/page/{token}``: a partner's page for a couple with ``--rituals`` rituals, tonight's
  question open (her answer given, waiting for his) and ``--past`` revealed questions under
  "Our questions" (a full first page of them), as a partner
  reloading it gets it: from the page cache, checked by one stamp query
  (``service/web/page/routes.py``). A page built afresh (after a change, or a minute later) is
  timed in this process and printed beside.

Then, in this process, the SQL statements one page view runs for couples with 1, 10 and 40
rituals and 0, 7 and 30 past questions (goal: the same number whatever the numbers).

Goal (issue): the page >= 30 % of /ping's requests per second.

    python -m bench.page [--seconds 5] [--concurrency 8] [--rituals 10] [--past 7]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection

import sqlalchemy as sa
from sqlalchemy.orm import Session
from starlette.routing import Route

from bench.common import database, serve_app
from bench.feeds import Phase, fetch, load, ping
from service.core.clock import SystemClock
from service.core.config import DatabaseSettings, LogSettings, Settings, WebSettings
from service.core.crypto import Keyring, new_key
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import (
    Answer,
    Channel,
    Couple,
    Partner,
    Prompt,
    Reminder,
    ReminderPurpose,
    ReminderState,
)
from service.domain import couples, partners, prompts, rituals
from service.web.page import tokens as page_tokens
from service.web.page import view as partner_page
from service.web.page.guard import render
from service.web.page.routes import page_context

GOAL = 0.30
# The answers are sealed: the bench's own key, handed to the served app (a spawned process
# would make a key of its own on import).
KEY = new_key()
KEYS = Keyring((KEY,))
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


def seed(db: Database, now: datetime, n_rituals: int, name: str = "Bench", past: int = 7) -> str:
    """One couple made through the service functions, as the CLI would, with an asking
    check-in (tonight's question open, ``past`` earlier ones revealed); returns the page
    token of its first partner."""
    with db.session() as s:
        c = couples.add(s, now, name=name, timezone="Europe/Berlin")
        p = partners.add(
            s,
            now,
            c,
            name="Alice",
            phone="+4915123456789",
            email="alice@example.org",
            timezone=None,
            channels="sms,email",
            quiet_hours="22:00-07:00",
            sms_consent="bench",
        )
        sam = partners.add(
            s,
            now,
            c,
            name="Sam",
            phone=None,
            email="sam@example.org",
            timezone="America/New_York",
            channels="email",
            quiet_hours=None,
            sms_consent=None,
        )
        for i in range(n_rituals):
            spec = rituals.RitualSpec(
                kind="custom",
                title=f"Ritual {i}",
                at=f"{8 + i % 14:02d}:{(i * 5) % 60:02d}",
                every=f"weekly:{WEEKDAYS[i % 7]}",
                remind="0,30",
            )
            rituals.add(s, now, c, spec)
        asked(s, now, c, p, sam, past)
        return page_tokens.issue(s, now, p, KEYS)


def asked(
    s: Session, now: datetime, couple: Couple, alice: Partner, sam: Partner, past: int
) -> None:
    """The check-in's question: nudged an hour ago, Alice's answer in; ``past`` earlier
    evenings answered by both and revealed. Rows as the dispatcher and replies write them."""
    check_in = rituals.add(s, now, couple, rituals.RitualSpec(), template="five-minute-check-in")
    prompts.sync_builtin(s, now)
    pool = list(s.scalars(sa.select(Prompt.id).where(Prompt.kind == check_in.kind)))
    for day in range(past + 1):
        occ = now - timedelta(hours=1, days=day)
        prompt = pool[day % len(pool)]
        s.add(
            Reminder(
                couple_id=couple.id,
                ritual_id=check_in.id,
                partner_id=alice.id,
                channel=Channel.SMS,
                offset_minutes=0,
                purpose=ReminderPurpose.NUDGE,
                occurrence_start=occ,
                due_at=occ,
                expires_at=occ + timedelta(hours=2),
                state=ReminderState.SENT,
                attempts=1,
                next_attempt_at=occ,
                prompt_id=prompt,
                sent_at=occ,
                created_at=occ,
                updated_at=occ,
            )
        )
        for who in (alice, sam) if day else (alice,):
            s.add(
                Answer(
                    couple_id=couple.id,
                    ritual_id=check_in.id,
                    occurrence_start=occ,
                    partner_id=who.id,
                    text=KEYS.seal(f"{who.name}'s answer on day {day}, a sentence or two long."),
                    mood=None,
                    late=False,
                    answered_at=occ + timedelta(minutes=5),
                    revealed_at=occ + timedelta(minutes=9) if day else None,
                    prompt_id=prompt,
                )
            )
    s.flush()


def serve(url: str, conn: Connection, key: str) -> None:
    """Child process: the app as ``hearth web`` serves it, plus /ping."""

    from service.core.logs import configure
    from service.web import create_app

    configure(LogSettings(level="warning"))
    settings = Settings(database=DatabaseSettings(url=url), encryption={"keys": key})
    hearth = Hearth(settings=settings, db=Database(url), clock=SystemClock())
    app = create_app(hearth)
    app.router.routes.append(Route("/ping", ping, methods=["GET"]))
    serve_app(app, conn, lifespan="off")


def queries_per_view(db: Database, token: str, now: datetime) -> int:
    seen: list[str] = []

    def count(conn: object, cursor: object, statement: str, *rest: object) -> None:
        seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        with db.session() as s:
            p = partner_page.load(s, token)
            assert p is not None
            view = partner_page.build(s, p, now, WebSettings(), None, KEYS)
            assert view.question is not None and view.past
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    return len(seen)


async def _measure(
    port: int, token: str, seconds: float, concurrency: int, pid: int
) -> list[Phase]:
    path = f"/page/{token}"
    status, _, body = await fetch(port, path)
    assert status == 200 and b"Hearth for Alice" in body, status
    assert b'id="answer"' in body and b"answer on day 1," in body  # question and archive
    phases = [
        Phase("ping (trivial)", "/ping", 200),
        Phase("healthz", "/healthz", 200),
        Phase("page", path, 200),
    ]
    rounds = max(1, round(seconds))
    for i in range(rounds):
        for phase in phases:
            await load(port, phase, concurrency, 1.0 if i == 0 else 0.2, seconds / rounds, pid)
    return phases


def full_view_ms(db: Database, token: str, now: datetime, n: int = 20) -> float:
    """A page built and rendered without the page cache (the first view after a change)."""
    t0 = time.perf_counter()
    for _ in range(n):
        with db.session() as s:
            p = partner_page.load(s, token)
            assert p is not None
            view = partner_page.build(s, p, now, WebSettings(), None, KEYS)
        render("page.html", **page_context(view, token))
    return (time.perf_counter() - t0) / n * 1000


def run(seconds: float, concurrency: int, n_rituals: int, past: int) -> None:
    now = datetime.now(UTC)
    with database("sqlite") as db:
        counts = {}
        for n, k in ((1, 1), (10, 7), (40, 30)):
            token = seed(db, now, n, name=f"Count {n}", past=k)
            counts[f"{n} rituals, {k} past"] = queries_per_view(db, token, now)
        token = seed(db, now, n_rituals, past=past)
        full_ms = full_view_ms(db, token, now)
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(db.url, child, KEY), daemon=True)
        proc.start()
        try:
            if not parent.poll(30):
                raise RuntimeError("uvicorn did not start")
            port = parent.recv()
            assert proc.pid is not None
            phases = asyncio.run(_measure(port, token, seconds, concurrency, proc.pid))
        finally:
            proc.terminate()
            proc.join(10)
    ping_rate = phases[0].rate
    print(
        f"\n{phases[0].seconds:.1f}s per endpoint, interleaved; {concurrency} connections; "
        f"the page's couple has {n_rituals} rituals, a question open and {past} past ones"
    )
    print(
        f"{'endpoint':<16} {'requests':>8} {'req/s':>8} {'vs ping':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'errors':>6} {'srv CPU':>7} {'cli CPU':>7}"
    )
    for p in phases:
        print(
            f"{p.label:<16} {len(p.latencies):>8,} {p.rate:8,.1f} {p.rate / ping_rate:8.0%} "
            f"{p.pct(0.5):7.1f} {p.pct(0.99):7.1f} {p.errors:6d} {p.server_cpu:7.0%} "
            f"{p.client_cpu:7.0%}"
        )
    print()
    print(
        "SQL statements per page view built afresh: "
        + ", ".join(f"{n}: {q}" for n, q in counts.items())
        + "; a view from the page cache runs 1 (the stamp)"
    )
    print(
        f"a page built and rendered afresh, in this process: {full_ms:.1f} ms "
        f"({n_rituals} rituals); the page phase above is served from the cache"
    )
    ratio = phases[2].rate / ping_rate
    print(f"{'PASS' if ratio >= GOAL else 'MISS'}  page: {ratio:.1%} of /ping, goal >= {GOAL:.0%}")
    fixed = len(set(counts.values())) == 1
    print(f"{'PASS' if fixed else 'MISS'}  queries per view fixed whatever the number of rituals")
    errors = sum(p.errors for p in phases)
    print(f"{'PASS' if errors == 0 else 'MISS'}  unexpected answers: {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured, per endpoint")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--rituals", type=int, default=10, help="rituals of the page's couple")
    parser.add_argument("--past", type=int, default=7, help="its questions already revealed")
    args = parser.parse_args()
    t0 = time.perf_counter()
    run(args.seconds, args.concurrency, args.rituals, args.past)
    print(f"(run took {time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
