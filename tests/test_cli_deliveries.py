"""``hearth deliveries list/retry`` and ``hearth send-test``: through the CLI, against the
Twilio stand-in and the SMTP sink."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import sqlalchemy as sa

from service.channels import build
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Reminder
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from tests import peers
from tests.conftest import Cli, make_settings, snapshot
from tests.factories import TONIGHT, add_ritual, couple_with_partners
from tests.peers.smtp_sink import SmtpSink
from tests.peers.twilio_standin import TwilioStandIn
from tests.processes import wait_for

ALICE = "+4915123456789"


def _cli(db: Database, clock: FakeClock, standin: TwilioStandIn, sink: SmtpSink) -> Cli:
    return Cli(
        Hearth(settings=make_settings(db, **peers.sections(standin, sink)), db=db, clock=clock)
    )


def _tonight_sent_or_failed(
    db: Database, clock: FakeClock, standin: TwilioStandIn, sink: SmtpSink
) -> Cli:
    """Tonight's check-in went out; Alice's number was refused (21211)."""
    cid = couple_with_partners(db, clock.now())
    add_ritual(db, clock.now(), cid, "five-minute-check-in")
    run = _cli(db, clock, standin, sink)
    planner.plan(db.write_engine, clock.now(), timedelta(hours=48), 30)
    standin.fail_to(ALICE, status=400, code=21211)
    clock.set(TONIGHT)
    d = Dispatcher(run.hearth, build(run.hearth.settings), rng=random.Random(5))
    tally = d.run_once()
    assert (tally.sent, tally.failed) == (2, 1)
    d.close()
    return run


def test_deliveries_list_filters_and_shows_errors(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    run = _tonight_sent_or_failed(db, clock, twilio_standin, smtp_sink)
    everything = json.loads(run.ok("deliveries", "list", "--json").output)
    tonight = [r for r in everything if r["due_at"].startswith("2026-01-05T20:00")]
    assert sorted((r["channel"], r["state"]) for r in tonight) == [
        ("email", "sent"),
        ("email", "sent"),
        ("sms", "failed"),
    ]
    failed = json.loads(run.ok("deliveries", "list", "--state", "failed", "--json").output)
    assert [(r["channel"], r["last_error"]) for r in failed] == [
        ("sms", "twilio 21211: invalid 'To' number")
    ]
    sent = json.loads(
        run.ok("deliveries", "list", "--couple", "Alice & Sam", "--state", "sent", "--json").output
    )
    assert {r["provider_message_id"] for r in sent} == {
        m.message["Message-ID"] for m in smtp_sink.messages
    }
    table = run.ok("deliveries", "list", "--state", "failed").output
    assert "twilio 21211" in table and "failed" in table
    assert json.loads(run.ok("deliveries", "list", "--limit", "1", "--json").output)[0]["id"]
    bad = run("deliveries", "list", "--limit", "0")
    assert bad.exit_code == 2 and "limit" in bad.output


def test_deliveries_retry_queues_a_failed_text_and_the_dispatcher_sends_it(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    run = _tonight_sent_or_failed(db, clock, twilio_standin, smtp_sink)
    [failed] = json.loads(run.ok("deliveries", "list", "--state", "failed", "--json").output)
    [sent, *_] = json.loads(run.ok("deliveries", "list", "--state", "sent", "--json").output)

    before = snapshot(db)
    refused = run("deliveries", "retry", str(sent["id"]))  # already sent: not again
    assert refused.exit_code == 2 and f"reminder {sent['id']} is sent" in refused.output
    missing = run("deliveries", "retry", "999999")
    assert missing.exit_code == 2 and "not found" in missing.output
    assert snapshot(db) == before  # a refused command changes nothing

    twilio_standin.clear_fail_to()
    clock.advance(timedelta(hours=2))  # long stale: a retry gets a fresh expiry
    out = run.ok("deliveries", "retry", str(failed["id"])).output
    assert f"reminder {failed['id']} queued again" in out
    with db.session() as s:
        row = s.get(Reminder, failed["id"])
        assert row is not None and row.state.value == "scheduled" and row.last_error is None
        assert row.expires_at > clock.now()
    d = Dispatcher(run.hearth, build(run.hearth.settings), rng=random.Random(5))
    assert d.run_once().sent == 1
    d.close()
    assert [r.to for r in twilio_standin.sent] == [ALICE]


def test_send_test_reaches_twilio_and_smtp(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    couple_with_partners(db, clock.now())
    run = _cli(db, clock, twilio_standin, smtp_sink)
    out = run.ok("send-test", "Alice", "--channel", "sms").output
    [sms] = twilio_standin.sent
    assert f"sent a test sms to Alice (provider id {sms.sid})" in out
    assert sms.to == ALICE and sms.body is not None and "STOP" in sms.body
    out = run.ok("send-test", "Sam", "--channel", "email").output
    [mail] = smtp_sink.messages
    assert mail.rcpt_tos == ["sam@example.org"] and mail.subject == "Hearth test message"
    assert b"STOP" not in mail.raw  # email replies are not read: never ask for one
    assert f"provider id {mail.message['Message-ID']}" in out
    with db.engine.connect() as conn:  # a test message is not a reminder
        assert conn.scalar(sa.select(sa.func.count()).select_from(Reminder)) == 0


def test_send_test_says_why_it_failed(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    couple_with_partners(db, clock.now())
    run = _cli(db, clock, twilio_standin, smtp_sink)
    twilio_standin.fail_to(ALICE, status=400, code=21408)
    failed = run("send-test", "Alice", "--channel", "sms")
    assert failed.exit_code == 1
    assert "sms test failed (permanent): twilio 21408" in failed.output
    twilio_standin.fail_next(1, status=503)
    failed = run("send-test", "Alice", "--channel", "sms")
    assert failed.exit_code == 1 and "sms test failed (temporary)" in failed.output
    smtp_sink.reject_to("sam@example.org", code=550)
    failed = run("send-test", "Sam", "--channel", "email")
    assert failed.exit_code == 1 and "email test failed (permanent): smtp 550" in failed.output
    no_phone = run("send-test", "Sam", "--channel", "sms")
    assert no_phone.exit_code == 2 and "Sam has no phone number" in no_phone.output
    assert twilio_standin.sent == [] and smtp_sink.messages == []


def test_deliveries_list_says_when_an_outcome_is_unknown_until_the_provider_is_asked(
    db: Database, clock: FakeClock, twilio_standin: TwilioStandIn, smtp_sink: SmtpSink
) -> None:
    """The provider answers after the client gave up: the text may be there, so the row is
    not shown as merely 'sending' but as unknown, until the settle asks the provider."""
    cid = couple_with_partners(db, clock.now(), alice_both=False)
    add_ritual(db, clock.now(), cid, "five-minute-check-in")
    sections = peers.sections(twilio_standin, smtp_sink)
    sections["twilio"]["timeout_seconds"] = 0.2
    hearth = Hearth(settings=make_settings(db, **sections), db=db, clock=clock)
    run = Cli(hearth)
    planner.plan(db.write_engine, clock.now(), timedelta(hours=48), 30)
    twilio_standin.latency = 1.0
    clock.set(TONIGHT)
    d = Dispatcher(hearth, build(hearth.settings, clock), rng=random.Random(5))
    d.run_once()
    wait_for(lambda: twilio_standin.in_progress == 0, 10, "the slow answer")
    [row] = [
        r
        for r in json.loads(run.ok("deliveries", "list", "--state", "sending", "--json").output)
        if r["channel"] == "sms"
    ]
    assert row["outcome_unknown_since"].startswith("2026-01-05T20:00")
    assert row["reason"] == (
        "outcome unknown since 20:00 UTC (twilio answer lost: ReadTimeoutError): the provider"
        " is asked before any resend"
    )
    assert "outcome unknown since 20:00 UTC" in run.ok("deliveries", "list").output
    twilio_standin.latency = 0.0
    clock.advance(timedelta(seconds=hearth.settings.daemon.lease_seconds + 1))
    d.run_once()
    d.close()
    [sent] = [
        r
        for r in json.loads(run.ok("deliveries", "list", "--json").output)
        if r["channel"] == "sms" and r["due_at"].startswith("2026-01-05T20:00")
    ]
    assert (sent["state"], sent["outcome_unknown_since"], sent["reason"]) == ("sent", None, None)
    assert len(twilio_standin.accepted(ALICE)) == 1  # asked, not sent again
