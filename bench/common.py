"""Shared bench plumbing: throwaway databases and bulk seeding of couples.

Seeding writes rows with Core ``executemany`` (it is setup, not what is measured); every
ritual, partner and couple is shaped exactly as the service would create it.
"""

from __future__ import annotations

import asyncio
import resource
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import uvicorn
from starlette.types import ASGIApp

from service.core.text import name_key
from service.db import migrate
from service.db.engine import Database
from service.db.models import Base, Couple, Partner, Ritual
from service.domain.templates import TEMPLATES

PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def database(backend: str) -> Iterator[Database]:
    """A migrated, empty database: a SQLite file in a temp dir, or a fresh PG schema."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
            migrate.upgrade(db)
            try:
                yield db
            finally:
                db.dispose()
        return
    name = f"hearth_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    db = Database(f"{PG_BASE}?options=-csearch_path%3D{name}")
    try:
        migrate.upgrade(db)
        yield db
    finally:
        db.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def seed(
    db: Database,
    couples: int,
    now: datetime,
    *,
    templates: tuple[str, ...] = ("five-minute-check-in", "gratitude-three", "date-night"),
    partners: int = 2,
    channel: str = "email",
    one_off_at: datetime | None = None,
    chunk: int = 5000,
) -> None:
    """``couples`` couples in Europe/Berlin, each with ``partners`` partners reachable on
    ``channel`` and either the given templates or one one-off ritual at ``one_off_at``."""
    c_t, p_t, r_t = (_table(m) for m in (Couple, Partner, Ritual))
    start = now.date()
    with db.engine.begin() as conn:
        for lo in range(0, couples, chunk):
            hi = min(couples, lo + chunk)
            conn.execute(
                c_t.insert(),
                [
                    {
                        "id": i + 1,
                        "name": f"Couple {i}",
                        "name_key": name_key(f"Couple {i}"),
                        "timezone": "Europe/Berlin",
                        "change_stamp": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in range(lo, hi)
                ],
            )
            conn.execute(
                p_t.insert(),
                [
                    {
                        "couple_id": i + 1,
                        "name": f"P{k}",
                        "name_key": name_key(f"P{k}"),
                        "phone": f"+1415{(i * partners + k) % 10_000_000:07d}",
                        "email": f"p{k}.{i}@example.org",
                        "timezone": "Europe/Berlin",
                        "channels": channel,
                        "sms_consent": "consented",
                        "full_text": False,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in range(lo, hi)
                    for k in range(partners)
                ],
            )
            conn.execute(
                r_t.insert(), list(_rituals(range(lo, hi), templates, start, now, one_off_at))
            )
        if db.engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT setval('couple_id_seq', (SELECT max(id) FROM couple))"))
            conn.execute(sa.text("ANALYZE"))


def _table(model: type[Base]) -> sa.Table:
    """A model's table; ``__table__`` is typed as any ``FromClause``, which has no ``insert``."""
    table = model.__table__
    assert isinstance(table, sa.Table), table
    return table


def _rituals(
    ids: range,
    templates: tuple[str, ...],
    start: date,
    now: datetime,
    one_off_at: datetime | None,
) -> Iterator[dict[str, object]]:
    for i in ids:
        specs: list[tuple[str, str, str | None, time | None, int, str]] = []
        if one_off_at is not None:
            local = one_off_at.astimezone(ZoneInfo("Europe/Berlin"))
            specs.append(("check_in", "Burst", None, local.time().replace(tzinfo=None), 60, "0"))
            day = local.date()
        else:
            day = start
            for name in templates:
                t = TEMPLATES[name]
                specs.append(
                    (
                        t.kind.value,
                        t.title,
                        t.rrule,
                        t.at,
                        t.duration_minutes,
                        ",".join(map(str, t.offsets)),
                    )
                )
        for kind, title, rule, at, duration, offsets in specs:
            yield {
                "couple_id": i + 1,
                "uid": f"{uuid.uuid4()}@hearth",
                "kind": kind,
                "title": title,
                "description": "",
                "dtstart_date": day,
                "start_time": at,
                "duration_minutes": duration,
                "rrule": rule,
                "timezone": "Europe/Berlin",
                "reminder_offsets": offsets,
                "channels": "",
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }


def reset_peak_rss() -> None:
    """Start a new peak-RSS measurement (Linux: ``clear_refs`` 5 resets VmHWM), so a figure
    belongs to what ran since, not to an earlier, larger phase of the same process."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb() -> float:
    """Peak resident set size since the last :func:`reset_peak_rss` (or the process start)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s" if seconds > 0 else "inf"


def serve_app(app: ASGIApp, conn: Connection, lifespan: Literal["on", "off"]) -> None:
    """Serve ``app`` with uvicorn on a free loopback port in this (child) process; the port
    goes back through ``conn`` once the socket is bound. Runs until the process is ended."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan=lifespan
        )
    )

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)  # waiting for the socket to bind
        conn.send(server.servers[0].sockets[0].getsockname()[1])
        await task

    asyncio.run(main())
