"""A STOP is final the moment it is answered: with texts already claimed and waiting in the
send pool, no text reaches the Twilio stand-in after the STOP request has returned. On both
databases, in one process (the webhook and the dispatcher share it) and as `hearth web` and
`hearth worker` in separate processes."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from service.channels import build_one
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, Reminder, ReminderState
from service.outbox import claims, planner
from service.outbox.dispatcher import Dispatcher
from service.outbox.gates import Verdict
from tests.conftest import make_settings
from tests.factories import add_ritual, couple_with_partners, sms_one_offs
from tests.peers.twilio_standin import TwilioStandIn
from tests.processes import free_port, wait_for
from tests.test_daemon import DaemonProcess
from tests.test_daemon import backend_db as backend_db_fixture
from tests.test_daemon import daemons as daemons_fixture
from tests.test_daemon import migrated as migrated_fixture
from tests.test_webhooks import PUBLIC, STOPPED, TONIGHT, Outbox, _sections, post, sms_from
from tests.web import serve

COUPLES = 40
daemons, migrated, backend_db = daemons_fixture, migrated_fixture, backend_db_fixture  # reused


def _many_texts_for_alice(db: Database, now: Any) -> None:
    """Alice's number is a partner in many couples: one STOP opts out every one of them."""
    for i in range(COUPLES):
        cid = couple_with_partners(db, now, name=f"Couple {i}")
        add_ritual(db, now, cid, "five-minute-check-in", channels="sms")
    planner.plan(db.write_engine, now, timedelta(hours=48), 30)


def test_no_text_after_the_stop_is_answered_in_one_process(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn
) -> None:
    _many_texts_for_alice(db, clock.now())
    sections = _sections(twilio_standin)
    sections["daemon"] = {"concurrency": 2}
    hearth = Hearth(settings=make_settings(db, **sections), db=db, clock=clock)
    d = Dispatcher(
        hearth,
        {
            Channel.SMS: build_one(hearth.settings, Channel.SMS),
            Channel.EMAIL: Outbox(Channel.EMAIL),
        },
    )
    twilio_standin.latency = 0.05  # 40 texts through 2 threads: most wait in the pool
    clock.set(TONIGHT)
    token, ids = d.claim(100)
    assert len(ids) == COUPLES
    jobs = d.prepare(token, ids)  # every one passed its gates: claimed, rendered, waiting
    with serve(hearth) as base, httpx.Client(base_url=base, timeout=10) as http:
        d.submit(jobs)
        wait_for(lambda: len(twilio_standin.requests) >= 3, 10, "the first texts")
        reply = post(http, "/twilio/inbound", sms_from("STOP"))
        answered = time.monotonic()
        assert reply.status_code == 200 and STOPPED in reply.text
        assert d.wait_idle(30)
    late = [r.received_at - answered for r in twilio_standin.requests if r.received_at > answered]
    assert late == [], f"{len(late)} texts reached Twilio after the STOP was answered"
    with db.session() as s:
        states = list(s.scalars(sa.select(Reminder.state).where(Reminder.channel == Channel.SMS)))
    sent = states.count(ReminderState.SENT)
    assert sent == len(twilio_standin.requests) and sent < COUPLES
    assert states.count(ReminderState.SKIPPED) == COUPLES - sent
    d.stop(1)
    d.close()


def test_the_stop_is_read_again_if_it_commits_during_the_last_look(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-process counter: a STOP committed in this process while a send's consent read
    was under way makes the send read again before it goes out."""
    _many_texts_for_alice(db, clock.now())
    hearth = Hearth(settings=make_settings(db, **_sections(twilio_standin)), db=db, clock=clock)
    sms = build_one(hearth.settings, Channel.SMS)
    d = Dispatcher(hearth, {Channel.SMS: sms, Channel.EMAIL: Outbox(Channel.EMAIL)})
    clock.set(TONIGHT)
    token, ids = d.claim(1)
    [job] = d.prepare(token, ids)
    looks: list[Any] = []
    real = claims.recheck

    def look_while_stop_commits(*args: Any) -> Any:
        verdict = real(*args)  # read: still consented
        looks.append(verdict)
        if len(looks) == 1:
            with serve(hearth) as base, httpx.Client(base_url=base, timeout=10) as http:
                assert STOPPED in post(http, "/twilio/inbound", sms_from("STOP")).text
        return verdict

    monkeypatch.setattr(claims, "recheck", look_while_stop_commits)
    d.send(job)
    d.wait_idle(10)
    assert looks[0] is True and isinstance(looks[1], Verdict) and len(looks) == 2
    assert twilio_standin.requests == []
    d.close()


# -- `hearth web` and `hearth worker` as separate processes --------------------------------

SHARED = "+14155550100"


def _shared_number_burst(db: Database, n: int) -> None:
    """``n`` couples whose partner texts from one number, each nudged in 2 s (real time)."""
    now = datetime.now(UTC)
    sms_one_offs(db, now, [now + timedelta(seconds=2)] * n, title="Shared", phone=SHARED)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_no_text_after_the_stop_is_answered_by_another_process(
    backend_db: Database,
    tmp_path: Path,
    daemons: list[DaemonProcess],
    twilio_standin: TwilioStandIn,
) -> None:
    db = backend_db
    _shared_number_burst(db, 60)
    twilio_standin.latency = 0.5  # 10 threads sending, 10 more claimed and waiting
    port = free_port()
    web = DaemonProcess(
        db.url,
        tmp_path,
        twilio_standin,
        HEARTH_WEB_PORT=str(port),
        HEARTH_WEB_PUBLIC_BASE_URL=PUBLIC,
    )
    worker = DaemonProcess(
        db.url,
        tmp_path,
        twilio_standin,
        HEARTH_DAEMON_CONCURRENCY="10",
        HEARTH_DAEMON_LEASE_SECONDS="60",
    )
    daemons.extend([web.start("web", ready=None), worker.start("worker")])
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        wait_for(lambda: _answers(http), 30, "hearth web")
        wait_for(lambda: len(twilio_standin.requests) >= 12, 30, "the first texts")
        reply = post(http, "/twilio/inbound", sms_from("STOP", sender=SHARED))
        answered = time.monotonic()
        assert reply.status_code == 200 and STOPPED in reply.text
    wait_for(lambda: _settled(db) == 60, 30, "every reminder settled")
    late = [r.received_at - answered for r in twilio_standin.requests if r.received_at > answered]
    assert late == [], f"{len(late)} texts reached Twilio after the STOP was answered"
    sent = len(twilio_standin.requests)
    assert 12 <= sent < 60


def _answers(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def _settled(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.scalar(
                sa.select(sa.func.count())
                .select_from(Reminder)
                .where(Reminder.state.not_in([ReminderState.SCHEDULED, ReminderState.SENDING]))
            )
            or 0
        )
