"""The evening peak at the provider's real rate: a realistic population, once with load
leveling and once without, against the forecast.

A population (default 20,000 couples on SQLite) is seeded through the import service
(:func:`service.domain.importer.apply`): zones Europe/Berlin, Europe/London,
America/New_York and America/Los_Angeles; a nightly check-in at 21:00 or 21:30 local,
gratitude at 08:00 for half of them, a Friday date night (at the start and 4 hours ahead) for
a third; every partner texts (consent recorded), a tenth also by email (routed: one nudge by
SMS, email as standby), a tenth by email only. It is planned for one Friday (30 hours), the
forecast taken, and the dispatcher driven against the Twilio stand-in (its own process) and
the SMTP sink under an injected clock: each simulated second the worker claims as many texts
as the sender pool sends in a second (``--sms-rate``; by default a Messaging Service of 40
long codes at 1 segment/s) and as many emails as the relay takes (``--email-per-minute``).
Twice: with leveling (the default) and without; then the ratio between the two runs, and the
forecast's figures beside what happened.

Per sender pool: messages sent (as the stand-in and the sink counted them), capacity,
p50/p99/max lateness, the earliest early send, expired. Target: with leveling, max lateness
<= 60 s and 0 expired in every minute whose peak the early window's capacity covers; the
others the forecast named beforehand.

    python -m bench.peak [--couples 20000] [--backend sqlite|postgresql] [--sms-rate 40]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bench.burst import RemoteStandIn
from bench.common import database
from service.channels import build
from service.core.clock import FakeClock
from service.core.config import LogSettings, Settings
from service.core.logs import configure
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, Reminder, ReminderPurpose, ReminderState
from service.domain import importer
from service.outbox import capacity, leveling, planner
from service.outbox.dispatcher import Dispatcher
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

ZONES = (
    ("Europe/Berlin", 0.4),
    ("Europe/London", 0.3),
    ("America/New_York", 0.2),
    ("America/Los_Angeles", 0.1),
)
# The simulated day: a Friday, from just before midnight UTC until Los Angeles' 21:30 is over.
START = datetime(2026, 1, 8, 23, 40, tzinfo=UTC)
END = datetime(2026, 1, 10, 6, 0, tzinfo=UTC)
SEEDED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def population(couples: int, seed: int = 26) -> list[importer.CoupleRow]:
    """The couples as an import file would give them (deterministic for a seed)."""
    rng = random.Random(seed)
    zones = [z for z, _ in ZONES]
    weights = [w for _, w in ZONES]
    rows = []
    for i in range(couples):
        tz = rng.choices(zones, weights)[0]
        row = importer.CoupleRow(i + 1, f"Couple {i:06d}", tz)
        for name in ("A", "B"):
            kind = rng.random()
            fields: dict[str, Any] = {
                "name": name,
                "phone": None if kind < 0.1 else f"+1212{2_000_000 + 2 * i + (name == 'B')}",
                "email": f"{name.lower()}{i}@example.org" if kind < 0.2 else None,
                "language": rng.choice(("en", "de", "es")),
                "sms_consent": None if kind < 0.1 else "import",
            }
            if kind >= 0.1:
                fields["channels"] = "sms,email" if kind < 0.2 else "sms"
            row.partners.append(importer.PartnerRow(i + 1, fields))
        at = "21:00" if rng.random() < 0.55 else "21:30"
        row.rituals.append((i + 1, {"template": "five-minute-check-in", "at": at}))
        if rng.random() < 0.5:
            row.rituals.append((i + 1, {"template": "gratitude-three", "at": "08:00"}))
        if rng.random() < 0.33:
            row.rituals.append((i + 1, {"template": "date-night", "remind": "0,240"}))
        rows.append(row)
    return rows


@dataclass
class PoolRun:
    pool: str
    rate: float
    sent: int = 0
    received: int = 0  # as the stand-in or the sink counted
    late: list[float] = field(default_factory=list)  # seconds after due (negative: early)
    expired: int = 0
    per_minute: dict[int, float] = field(default_factory=dict)  # due minute -> worst late

    def figures(self) -> tuple[float, float, float, float]:
        lat = sorted(max(0.0, x) for x in self.late) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        early = -min(self.late, default=0.0)
        return statistics.median(lat), p99, lat[-1], max(0.0, early)


def settings_for(db: Database, args: argparse.Namespace, level: bool, **extra: Any) -> Settings:
    return Settings(
        database={"url": db.url},
        twilio={"sender_rate_per_second": 1.0, "sender_count": args.sms_rate},
        smtp={"messages_per_minute": args.email_per_minute},
        delivery={"level": level},
        log={"level": "warning"},
        **extra,
    )


def seed(db: Database, couples: int) -> float:
    t0 = time.perf_counter()
    rows = population(couples)
    with db.session() as s:
        importer.apply(s, SEEDED, rows, "US", "en")
    return time.perf_counter() - t0


def plan(db: Database, settings: Settings) -> tuple[float, float, int]:
    """Plan the simulated day (afresh) and give the slots; returns the seconds planning and
    leveling took, and how many rows leveling moved."""
    with db.write_engine.begin() as conn:
        conn.execute(sa.delete(Reminder))
    t0 = time.perf_counter()
    horizon = END - START
    planner.plan(db.write_engine, START, horizon, settings.daemon.stale_after_minutes)
    t1 = time.perf_counter()
    moved = 0
    if settings.delivery.level:
        with db.write_engine.begin() as conn:
            moved = leveling.level(conn, START, settings, horizon)
    return t1 - t0, time.perf_counter() - t1, moved


def drive(db: Database, settings: Settings, standin_url: str, sink: SmtpSink) -> float:
    """Run the dispatcher over the day: each simulated second, one second's worth of each
    pool's capacity is claimed and sent; idle stretches are skipped. Returns wall seconds."""
    send = Settings(
        database={"url": db.url},
        channels={"sms": "twilio", "email": "smtp"},
        twilio={
            "account_sid": DEFAULT_ACCOUNT_SID,
            "auth_token": DEFAULT_AUTH_TOKEN,
            "from_number": "+15005550006",
            "api_base_url": standin_url,
            # The simulated second enforces the pool's rate: no real-time pacing.
            "sender_rate_per_second": 1e6,
            "account_rate_per_second": 1e6,
        },
        smtp={"host": sink.host, "port": sink.port, "security": "none"},
        log={"level": "warning"},
    )
    clock = FakeClock(START)
    d = Dispatcher(Hearth(settings=settings, db=db, clock=clock), build(send))
    rates = leveling.rates(settings)
    per_second = {Channel.SMS: rates["sms"], Channel.EMAIL: rates["email"]}
    budget = dict.fromkeys(per_second, 0.0)  # a fractional rate adds up over the seconds
    t0 = time.perf_counter()
    try:
        while clock.now() < END:
            caps = {}
            for ch, rate in per_second.items():
                budget[ch] = min(budget[ch] + rate, rate + 1.0)
                caps[ch] = int(budget[ch])
                budget[ch] -= caps[ch]
            # Rows the send-time checks settle (a standby covered by its SMS, a stale one)
            # take no turn of the provider's: pacing comes after the checks. Claim again
            # until this second's capacity is spent or nothing more is due.
            claimed = 0
            while any(caps.values()):
                token, ids = d.claim(sum(caps.values()) + 1, caps)
                if not ids:
                    break
                claimed += len(ids)
                jobs = d.prepare(token, ids)
                d.submit(jobs)
                for job in jobs:
                    caps[job.channel] -= 1
                if len(jobs) == len(ids):
                    break
            d.wait_idle()
            if claimed:
                clock.advance(1)
                continue
            with db.engine.connect() as conn:
                nxt = conn.scalar(
                    sa.select(sa.func.min(Reminder.next_attempt_at)).where(
                        Reminder.state == ReminderState.SCHEDULED
                    )
                )
            if nxt is None or nxt >= END:
                break
            clock.set(max(clock.now() + timedelta(seconds=1), nxt))
    finally:
        d.stop(10)
        d.close()
    return time.perf_counter() - t0


def measure(
    db: Database, settings: Settings, standin: RemoteStandIn, sink: SmtpSink
) -> dict[str, PoolRun]:
    rates = leveling.rates(settings)
    runs = {p: PoolRun(p, rates[p]) for p in ("sms", "email")}
    with db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(Reminder.channel, Reminder.state, Reminder.due_at, Reminder.sent_at).where(
                Reminder.purpose == ReminderPurpose.NUDGE, Reminder.standby.is_(False)
            )
        ).all()
        standby_sent = conn.scalar(
            sa.select(sa.func.count())
            .select_from(Reminder)
            .where(Reminder.standby.is_(True), Reminder.sent_at.is_not(None))
        )
    worst: dict[str, dict[int, float]] = defaultdict(dict)
    for ch, state, due, sent in rows:
        run = runs[str(ch)]
        minute = int(due.timestamp() // 60)
        if state == ReminderState.EXPIRED:
            run.expired += 1
            worst[run.pool][minute] = float("inf")
        elif sent is not None:
            late = (sent - due).total_seconds()
            run.sent += 1
            run.late.append(late)
            worst[run.pool][minute] = max(worst[run.pool].get(minute, 0.0), late)
    for p, run in runs.items():
        run.per_minute = worst[p]
    runs["sms"].received = sum(1 for r in standin.requests() if r.ok)
    runs["email"].received = len(sink.messages)
    if standby_sent:
        print(f"  (standby emails sent as fallbacks: {standby_sent})")
    return runs


def table(label: str, runs: dict[str, PoolRun]) -> None:
    print(f"\n{label}")
    print(
        f"  {'pool':<6} {'sent':>7} {'received':>9} {'capacity':>12} {'p50':>7} {'p99':>7} "
        f"{'max':>7} {'earliest':>9} {'expired':>8}"
    )
    for run in runs.values():
        p50, p99, worst, early = run.figures()
        cap = f"{run.rate:g}/s"
        print(
            f"  {run.pool:<6} {run.sent:>7} {run.received:>9} {cap:>12} {p50:>6.0f}s "
            f"{p99:>6.0f}s {worst:>6.0f}s {-early:>8.0f}s {run.expired:>8}"
        )


def check(forecast: capacity.Forecast, runs: dict[str, PoolRun]) -> bool:
    """The forecast against what happened: per pool the worst lateness and the expired count;
    every minute that went over (> 60 s late or expired) was named beforehand, and every
    minute the forecast did not name stayed within 60 s with none expired."""
    ok = True
    for name, run in runs.items():
        f = forecast.pools[name]
        _p50, _p99, worst, _early = run.figures()
        named = {int(p.minute.timestamp() // 60) for p in f.over}
        went_over = {m for m, late in run.per_minute.items() if late > 60}
        surprise = went_over - named
        print(
            f"  {name}: forecast worst {f.worst_late_seconds:.0f} s late, {f.expired} expired, "
            f"{len(named)} minute(s) named over capacity; measured worst {worst:.0f} s, "
            f"{run.expired} expired, {len(went_over)} minute(s) over; unforeseen: {len(surprise)}"
        )
        for p in f.over[:3]:
            print(
                f"    named: {p.minute:%a %H:%M} UTC, {p.due} due at {p.capacity_per_minute:g}/min,"
                f" worst {p.worst_late_seconds:.0f} s late, {p.expired} expired"
            )
        ok = ok and not surprise and abs(f.worst_late_seconds - worst) <= 2
        ok = ok and f.expired == run.expired
    return ok


def run_once(
    db: Database, args: argparse.Namespace, level: bool
) -> tuple[dict[str, PoolRun], capacity.Forecast]:
    settings = settings_for(db, args, level)
    seconds, level_seconds, moved = plan(db, settings)
    with db.engine.connect() as conn:
        days = (END - START) / timedelta(days=1)
        t0 = time.perf_counter()
        forecast = capacity.forecast(conn, START, settings, days=days)
        f_seconds = time.perf_counter() - t0
    print(
        f"\n{'with' if level else 'without'} leveling: planned in {seconds:.1f} s, "
        f"leveled in {level_seconds:.1f} s ({moved} slots moved), forecast in {f_seconds:.1f} s",
        flush=True,
    )
    with RemoteStandIn(0.0) as standin, SmtpSink() as sink:
        wall = drive(db, settings, standin.base_url, sink)
        runs = measure(db, settings, standin, sink)
    print(f"  driven in {wall:.0f} s wall", flush=True)
    table(f"{'with' if level else 'without'} leveling", runs)
    good = check(forecast, runs)
    print(f"  forecast matched what happened: {'yes' if good else 'NO'}")
    return runs, forecast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--couples", type=int, default=20_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--sms-rate", type=int, default=40, help="numbers in the Messaging Service, 1 seg/s each"
    )
    parser.add_argument("--email-per-minute", type=float, default=600.0)
    args = parser.parse_args()
    configure(LogSettings(level="warning"))
    with database(args.backend) as db:
        seconds = seed(db, args.couples)
        print(
            f"seeded {args.couples} couples through the import service in {seconds:.0f} s "
            f"({args.backend})"
        )
        leveled, f_on = run_once(db, args, level=True)
        flat, _f_off = run_once(db, args, level=False)
    print("\nratio without / with leveling:")
    for p in ("sms", "email"):
        on, off = leveled[p].figures(), flat[p].figures()
        ratios = [
            f"{what} {b / a:.1f}x" if a else f"{what} {b:.0f} s vs 0 s"
            for what, a, b in zip(("p50", "p99", "max"), on[:3], off[:3], strict=True)
        ]
        print(f"  {p}: " + ", ".join(ratios))
    print("\nforecast (with leveling), busiest minutes:")
    for name, pool in sorted(f_on.pools.items()):
        for pk in pool.peaks:
            print(
                f"  {name:<5} {pk.minute:%a %H:%M} UTC  {pk.due:>6} due  "
                f"capacity {pk.capacity_per_minute:g}/min  last out {pk.latest:%H:%M:%S}  "
                f"worst {pk.worst_late_seconds:.0f} s  expired {pk.expired}"
            )


if __name__ == "__main__":
    main()
