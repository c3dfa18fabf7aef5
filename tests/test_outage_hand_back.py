"""A pass that fails after claiming hands its rows back as soon as the database is back,
instead of leaving them 'sending' until their lease runs out (issue 14, item 6). A real
PostgreSQL of the test's own is stopped between the claim and the send-time checks."""

from __future__ import annotations

import io
import random
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.db import migrate
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, Reminder, ReminderState
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from tests.conftest import IN_CI, make_settings
from tests.factories import add_ritual, couple_with_partners
from tests.own_postgres import OwnPostgres
from tests.processes import wait_for

TONIGHT = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)
pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def own_pg(tmp_path: Path) -> Iterator[OwnPostgres]:
    reason = OwnPostgres.available()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    # Under /tmp, not pytest's tmp_path: the postgres user must reach the directory.
    root = Path("/tmp") / f"hearth-pg-{tmp_path.name}"
    shutil.rmtree(root, ignore_errors=True)
    pg = OwnPostgres(root).init()
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def _states(db: Database) -> dict[str, int]:
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(Reminder.state, sa.func.count()).group_by(Reminder.state))
        return {ReminderState(s).value: n for s, n in rows}


def test_rows_claimed_before_an_outage_go_out_as_soon_as_it_ends(own_pg: OwnPostgres) -> None:
    db = Database(own_pg.url)
    migrate.upgrade(db)
    clock = FakeClock(datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
    for i in range(10):
        cid = couple_with_partners(db, clock.now(), name=f"Couple {i}")
        add_ritual(db, clock.now(), cid, "five-minute-check-in")
    planner.plan(db.write_engine, clock.now(), timedelta(hours=48), 30)
    hearth = Hearth(settings=make_settings(db, daemon={"lease_seconds": 120}), db=db, clock=clock)
    d = Dispatcher(
        hearth, {ch: ConsoleTransport(ch, io.StringIO()) for ch in Channel}, rng=random.Random(1)
    )
    clock.set(TONIGHT)  # 30 nudges due; the fake clock never lets their lease run out
    failed = threading.Event()
    real = d.prepare

    def outage_after_the_claim(token: str, ids: list[int]) -> Any:
        if not failed.is_set():
            assert len(ids) == 30
            own_pg.stop()  # the database goes away between the claim and the gates
            try:
                return real(token, ids)
            finally:
                failed.set()
        return real(token, ids)

    d.prepare = outage_after_the_claim  # type: ignore[method-assign]
    loop = threading.Thread(target=d.loop, kwargs={"sleep_cap": 0.1}, daemon=True)
    loop.start()
    try:
        wait_for(failed.is_set, 30, "the failed pass")
        own_pg.start()
        # Without the hand-back the 30 rows stay 'sending' until their lease (120 s, never
        # in fake time) runs out.
        wait_for(lambda: _states(db).get("sent") == 30, 30, "every nudge sent")
    finally:
        d.stop(2)
        loop.join(10)
        d.close()
        db.dispose()
    assert d.tally.released >= 30 and d.tally.sent == 30
