"""Feed endpoint throughput: one couple, 10 rituals, 50 exceptions, served by the real app.

The app (``service.web.create_app``, AccessLog middleware included) runs under uvicorn in its
own process, configured as ``hearth web`` runs it, on a SQLite file; the load generator runs
in this process: ``--concurrency`` keep-alive HTTP/1.1 connections, each sending its next
request as soon as the previous answer is read (closed loop), for ``--seconds`` per endpoint
after a warm-up. The endpoints take turns in rounds of about a second, so that whatever else
the machine runs meanwhile weighs on all of them alike and the ratios stay fair. The client
speaks minimal HTTP/1.1 over asyncio streams rather than through httpx, so that it (one core
of two) stays well below the server's rate; the table shows both processes' CPU so a
saturated client would be visible.

Endpoints, all in the same run, against the same server:

- ``/ping``: truly trivial, a route added to the app instance here (no threadpool, no database);
- ``/healthz``: the app's own liveness check (threadpool hop + ``SELECT 1``);
- ``/feeds/{token}.ics``: the full feed, 200 with the body (built once per couple change stamp,
  served from the FeedCache);
- the same with ``If-None-Match: <ETag>``: the 304 path;
- ``/cold/feeds/{token}.ics``: the same handler mounted with a cache that never hits, so every
  request loads the rituals and builds the calendar, as the first fetch after each change
  does (one connection: a reference figure, no goal).

Plus, in this process, the cold build split into its database load and ``build_calendar``.

Goals (issue): full feed >= 50 % and 304 path >= 90 % of the requests/s of "a trivial
endpoint of the same app", which is ``/ping``: the verdicts that count are against it.
``/healthz`` (a threadpool hop and a query, as every feed request needs) is printed as a
second reference, to show how much of the gap is the database round trip itself. p99 <= 50 ms
on the feed paths.

- ``/threads/feeds/{token}.ics`` with ``If-None-Match``: the 304 with no reader on the event
  loop (every lookup through the feed threads), as PostgreSQL answered before the async pool.

Each part runs on SQLite (the goals above) and on PostgreSQL (its own figures: the lookup is
a network round trip there, awaited on the loop through psycopg's async pool).

    python -m bench.feeds [--seconds 5] [--concurrency 16] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import selectinload
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from bench.common import database, serve_app
from service.calendar import feed_tokens, feeds
from service.core.clock import SystemClock
from service.core.config import DatabaseSettings, LogSettings, Settings
from service.core.timeutil import zone
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Couple, Ritual
from service.domain import couples, partners, rituals, skips
from service.web import feeds as web_feeds

RITUALS: tuple[tuple[str | None, dict[str, str]], ...] = (
    ("five-minute-check-in", {}),
    ("morning-coffee", {}),
    ("gratitude-three", {}),
    ("appreciation-note", {}),
    ("weekly-deep-talk", {}),
    ("date-night", {}),
    ("future-vision", {}),
    ("anniversary", {"on": "2019-06-14"}),
    (
        None,
        {
            "kind": "check_in",
            "title": "Call from the road",
            "at": "18:30",
            "every": "weekdays",
            "timezone": "America/New_York",
        },
    ),
    (
        None,
        {
            "kind": "custom",
            "title": "Sunday walk",
            "at": "09:15",
            "every": "weekly:SU",
            "duration": "60",
            "timezone": "Asia/Kolkata",
        },
    ),
)
EXCEPTIONS = 50
P99_GOAL_MS = 50.0
GOALS = {"feed 200": 0.50, "feed 304": 0.90}


# --- seeding ---------------------------------------------------------------------------------


def seed_couple(db: Database, now: datetime) -> str:
    """The couple through the service layer, as the CLI makes it; returns Alice's feed token."""
    with db.session() as s:
        c = couples.add(s, now, name="Alice & Sam", timezone="Europe/Berlin")
        for name, phone, chans in (
            ("Alice", "+4915123456789", "sms,email"),
            ("Sam", None, "email"),
        ):
            partners.add(
                s,
                now,
                c,
                name=name,
                phone=phone,
                email=f"{name.lower()}@example.org",
                timezone=None,
                channels=chans,
                quiet_hours=None,
                sms_consent="signup form" if phone else None,
            )
        made = [
            rituals.add(s, now, c, rituals.RitualSpec(**spec), template=template)
            for template, spec in RITUALS
        ]
        # Exceptions spread over the rituals: the next occurrences, alternately skipped and
        # moved by an hour (an anniversary is yearly: only its next one or two).
        done = 0
        per = -(-EXCEPTIONS // len(made))
        while done < EXCEPTIONS:
            for r in made:
                free = [
                    o
                    for o in rituals.upcoming(r, now, 60)
                    if o.original_start not in {e.original_start for e in r.exceptions}
                ]
                for occ in free[: min(per, EXCEPTIONS - done)]:
                    if done % 2:
                        local = occ.original_start.astimezone(zone(r.timezone))
                        local = local.replace(tzinfo=None)
                        skips.move(s, now, r, occ.original_start, local + timedelta(hours=1))
                    else:
                        skips.skip(s, now, r, occ.original_start)
                    done += 1
                if done >= EXCEPTIONS:
                    break
        alice = partners.resolve(s, "Alice")
        return feed_tokens.issue(s, now, alice)


# --- the server process ----------------------------------------------------------------------


class NeverCache(web_feeds.FeedCache):
    """A FeedCache that never hits: every request loads and builds."""

    def get(self, key: web_feeds.Key) -> None:
        return None

    def put(self, item: Any) -> None:
        return None


async def ping(request: Request) -> Response:
    return PlainTextResponse("pong\n")


def serve(url: str, conn: Connection) -> None:
    """Child process: the app as ``hearth web`` serves it (h11, asyncio; production logging
    at level warning, so the AccessLog middleware runs but its info lines are dropped)."""

    from service.core.logs import configure
    from service.web import create_app

    configure(LogSettings(level="warning"))
    settings = Settings(database=DatabaseSettings(url=url), web={"feed_async_lookup": True})
    hearth = Hearth(settings=settings, db=Database(url), clock=SystemClock())
    app = create_app(hearth)
    cold = Starlette(routes=web_feeds.routes)
    cold.state.hearth = hearth
    cold.state.feed_cache = NeverCache()
    cold.state.feed_reader = app.state.feed_reader
    # The same cache with no reader on the loop: every lookup through the feed threads.
    threads = Starlette(routes=web_feeds.routes)
    threads.state.hearth = hearth
    threads.state.feed_cache = app.state.feed_cache
    threads.state.feed_reader = None
    app.router.routes.append(Route("/ping", ping, methods=["GET"]))
    app.router.routes.append(Mount("/cold", app=cold))
    app.router.routes.append(Mount("/threads", app=threads))
    # lifespan on, as `hearth web` runs: on PostgreSQL it opens the async pool for lookups.
    serve_app(app, conn, lifespan="on")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the load generator ----------------------------------------------------------------------


@dataclass
class Phase:
    label: str
    path: str
    expect: int
    headers: dict[str, str] = field(default_factory=dict)
    size: int | None = None  # the body length every answer must have
    concurrency: int | None = None  # None: the run's --concurrency
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def server_cpu(self) -> float:
        return self.server_cpu_s / self.seconds if self.seconds else 0.0

    @property
    def client_cpu(self) -> float:
        return self.client_cpu_s / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies) or [0.0]
        return lat[min(len(lat) - 1, int(len(lat) * q))] * 1000


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    body = await reader.readexactly(n) if n else b""
    return status, headers, body


def _request(path: str, headers: dict[str, str]) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode("latin-1")


async def fetch(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_request(path, headers or {}))
        return await _read_response(reader)
    finally:
        writer.close()


async def load(
    port: int, phase: Phase, concurrency: int, warmup: float, seconds: float, server_pid: int
) -> None:
    """One slice: ``warmup`` unmeasured, then ``seconds`` added to the phase's figures."""
    raw = _request(phase.path, phase.headers)
    phase.concurrency = phase.concurrency or concurrency
    measuring = False
    stop = False

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not stop:
                t0 = time.perf_counter()
                writer.write(raw)
                status, _, body = await _read_response(reader)
                dt = time.perf_counter() - t0
                if not measuring:
                    continue
                if status == phase.expect and phase.size in (None, len(body)):
                    phase.latencies.append(dt)
                else:
                    phase.errors += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(worker()) for _ in range(phase.concurrency)]
    await asyncio.sleep(warmup)
    cpu0, own0, t0 = cpu_seconds(server_pid), time.process_time(), time.perf_counter()
    measuring = True
    await asyncio.sleep(seconds)
    measuring = False
    phase.seconds += time.perf_counter() - t0
    phase.server_cpu_s += cpu_seconds(server_pid) - cpu0
    phase.client_cpu_s += time.process_time() - own0
    stop = True
    _, late = await asyncio.wait(tasks, timeout=10)  # requests in flight finish, unmeasured
    for task in late:
        task.cancel()


# --- in-process cold build -------------------------------------------------------------------


def cold_build(db: Database, now: datetime, budget: float) -> tuple[int, float, float, int]:
    """Repeated cold builds as the handler does them: (n, load ms, build ms, body bytes)."""
    n, load_s, build_s, size = 0, 0.0, 0.0, 0
    end = time.perf_counter() + budget
    while time.perf_counter() < end or n < 2:
        t0 = time.perf_counter()
        with db.session() as s:
            couple = s.scalars(sa.select(Couple)).one()
            rs = list(
                s.scalars(
                    sa.select(Ritual)
                    .where(Ritual.couple_id == couple.id)
                    .options(selectinload(Ritual.exceptions))
                    .order_by(Ritual.id)
                )
            )
            t1 = time.perf_counter()
            body = feeds.build_calendar(couple, rs, now=now, alarms=False)
        t2 = time.perf_counter()
        n, load_s, build_s, size = n + 1, load_s + t1 - t0, build_s + t2 - t1, len(body)
    return n, load_s / n * 1000, build_s / n * 1000, size


# --- main ------------------------------------------------------------------------------------


def run(seconds: float, concurrency: int, warmup: float, backend: str = "sqlite") -> None:
    now = datetime.now(UTC)
    print(f"\n=== {backend} ===")
    with database(backend) as db:
        t0 = time.perf_counter()
        token = seed_couple(db, now)
        with db.session() as s:
            n_exc = sum(len(r.exceptions) for r in s.scalars(sa.select(Ritual)))
            n_rit = s.scalar(sa.select(sa.func.count()).select_from(Ritual))
        print(
            f"seeded 1 couple, {n_rit} rituals, {n_exc} exceptions "
            f"in {time.perf_counter() - t0:.1f}s"
        )

        n, load_ms, build_ms, size = cold_build(db, now, 1.0)
        print(
            f"in-process cold build x{n}: load {load_ms:.1f} ms + build_calendar "
            f"{build_ms:.1f} ms = {1000 / (load_ms + build_ms):.0f} builds/s; "
            f"body {size:,} bytes"
        )

        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(db.url, child), daemon=True)
        proc.start()
        try:
            if not parent.poll(30):
                raise RuntimeError("uvicorn did not start")
            port = parent.recv()
            phases = asyncio.run(_measure(port, token, seconds, concurrency, warmup, proc.pid))
        finally:
            proc.terminate()
            proc.join(10)
    report(phases)


async def _measure(
    port: int, token: str, seconds: float, concurrency: int, warmup: float, pid: int | None
) -> list[Phase]:
    assert pid is not None
    path = f"/feeds/{token}.ics"
    status, headers, body = await fetch(port, path)
    assert status == 200 and body.startswith(b"BEGIN:VCALENDAR"), status
    etag = headers["etag"]
    status, _, cold_body = await fetch(port, "/cold" + path)
    assert status == 200 and cold_body == body, "cold mount must serve the same bytes"
    status, _, _ = await fetch(port, path, {"If-None-Match": etag})
    assert status == 304, status
    hot = [
        Phase("ping (trivial)", "/ping", 200),
        Phase("healthz", "/healthz", 200),
        Phase("feed 200", path, 200, size=len(body)),
        Phase("feed 304", path, 304, {"If-None-Match": etag}, size=0),
        Phase("feed 304 thread path", "/threads" + path, 304, {"If-None-Match": etag}, size=0),
    ]
    rounds = max(1, round(seconds))
    for i in range(rounds):
        for phase in hot:
            await load(port, phase, concurrency, warmup if i == 0 else 0.2, seconds / rounds, pid)
    cold = Phase("feed cold (no cache)", "/cold" + path, 200, size=len(body), concurrency=1)
    await load(port, cold, concurrency, warmup, seconds, pid)
    return [*hot, cold]


def report(phases: list[Phase]) -> None:
    by = {p.label: p for p in phases}
    # The issue's reference first: a trivial endpoint of the same app.
    refs = {"/ping": by["ping (trivial)"].rate, "/healthz": by["healthz"].rate}
    notes = {
        "/ping": " (the issue's reference: a trivial endpoint of the same app)",
        "/healthz": " (second reference: threadpool hop + SELECT 1)",
    }
    print(
        f"\n{phases[0].seconds:.1f}s per endpoint after warm-up, hot endpoints interleaved; "
        f"server: 1 uvicorn process (h11, asyncio); client: this process"
    )
    print(
        f"{'endpoint':<21} {'conns':>5} {'requests':>8} {'req/s':>8} {'vs ping':>8} "
        f"{'vs healthz':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'srv CPU':>7} "
        f"{'cli CPU':>7}"
    )
    for p in phases:
        print(
            f"{p.label:<21} {p.concurrency:>5} {len(p.latencies):>8,} {p.rate:8,.1f} "
            f"{p.rate / refs['/ping']:8.0%} {p.rate / refs['/healthz']:10.0%} "
            f"{p.pct(0.5):8.1f} {p.pct(0.99):8.1f} {p.errors:6d} {p.server_cpu:7.0%} "
            f"{p.client_cpu:7.0%}"
        )
    print()
    for label, goal in GOALS.items():
        p = by[label]
        for name, ref in refs.items():
            ratio = p.rate / ref
            hit = ratio >= goal
            print(
                f"{'PASS' if hit else 'MISS'}  {label}: {ratio:6.1%} of {name}{notes[name]}, "
                f"goal >= {goal:.0%}"
            )
        hit = p.pct(0.99) <= P99_GOAL_MS
        print(
            f"{'PASS' if hit else 'MISS'}  {label}: p99 {p.pct(0.99):.1f} ms at "
            f"{p.concurrency} connections, goal <= {P99_GOAL_MS:.0f} ms"
        )
    loop, threads = by["feed 304"].rate, by["feed 304 thread path"].rate
    print(
        f"      feed 304 with the lookup on the event loop: {loop / threads:.2f}x the thread path"
    )
    errors = sum(p.errors for p in phases)
    print(
        f"{'PASS' if errors == 0 else 'MISS'}  unexpected answers (status or body length): {errors}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured, per endpoint")
    parser.add_argument("--concurrency", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured, per endpoint")
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        run(args.seconds, args.concurrency, args.warmup, backend)


if __name__ == "__main__":
    main()
