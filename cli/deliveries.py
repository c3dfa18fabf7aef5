"""``hearth deliveries`` and ``hearth send-test``: the outbox and the channels."""

from __future__ import annotations

from typing import Any

import click

from cli.common import (
    ID,
    fmt_local,
    json_option,
    print_json,
    print_table,
    read_only,
    unit_of_work,
)
from service.core import reasons
from service.core.exceptions import InvalidInput
from service.db.models import Channel, Reminder, ReminderState
from service.domain import couples, partners, validation
from service.outbox import deliveries


def reminder_dict(r: Reminder) -> dict[str, Any]:
    return {
        "id": r.id,
        "couple_id": r.couple_id,
        "ritual_id": r.ritual_id,
        "partner_id": r.partner_id,
        "channel": r.channel,
        "purpose": r.purpose,
        "offset_minutes": r.offset_minutes,
        "occurrence_start": r.occurrence_start,
        "due_at": r.due_at,
        "expires_at": r.expires_at,
        "state": r.state,
        "attempts": r.attempts,
        "next_attempt_at": r.next_attempt_at,
        "sent_at": r.sent_at,
        "last_error": r.last_error,
        # Set while the provider may have the message and has not been asked yet.
        "outcome_unknown_since": r.unknown_since,
        # Why it was not delivered, in words (None: delivered, waiting, or nothing lost).
        "reason": (
            reasons.unknown(r.unknown_since, r.last_error)
            if r.state is ReminderState.SENDING and r.unknown_since is not None
            else reasons.words(r.state.value, r.last_error) or None
        ),
        "provider_message_id": r.provider_message_id,
    }


@click.group("deliveries")
def deliveries_group() -> None:
    """The outbox: what was sent, what is waiting, what failed."""


@deliveries_group.command("list")
@click.option("--couple", help="Only this couple (id or name).")
@click.option(
    "--state", type=click.Choice([s.value for s in ReminderState]), help="Only this state."
)
@click.option("--since", help="Due on or after this date (YYYY-MM-DD, UTC) or e.g. 24h, 7d.")
@click.option("--limit", default=200, show_default=True, help="At most this many rows.")
@json_option
def list_cmd(
    couple: str | None, state: str | None, since: str | None, limit: int, as_json: bool
) -> None:
    """List reminders, newest due first."""
    if not 1 <= limit <= 100_000:
        raise InvalidInput("limit", f"{limit} is out of range", "1 to 100000")
    with read_only() as (_, session, now):
        c = couples.resolve(session, couple) if couple else None
        start = validation.since(since, now) if since else None
        found = deliveries.list_(
            session,
            couple=c,
            state=ReminderState(state) if state else None,
            since=start,
            limit=limit,
        )
        data = [reminder_dict(r) for r in found]
        tz = {cp.id: cp.timezone for cp in couples.list_all(session)}
    if as_json:
        print_json(data)
        return
    rows = [
        (
            d["id"],
            d["couple_id"],
            fmt_local(d["due_at"], tz.get(d["couple_id"], "UTC")),
            d["channel"],
            d["purpose"],
            d["state"],
            d["attempts"],
            d["reason"] or "",
        )
        for d in data
    ]
    print_table(("id", "couple", "due", "channel", "purpose", "state", "tries", "reason"), rows)


@deliveries_group.command("retry")
@click.argument("reminder_id", type=ID)
def retry_cmd(reminder_id: int) -> None:
    """Send a failed, expired, skipped or undelivered reminder again, now."""
    with unit_of_work() as (hearth, session, now):
        fresh = hearth.settings.daemon.stale_after_minutes
        r = deliveries.requeue(session, now, reminder_id, fresh)
        click.echo(f"reminder {r.id} queued again; the daemon sends it within seconds")


@click.command("send-test")
@click.argument("partner")
@click.option(
    "--channel", type=click.Choice(["sms", "email"]), required=True, help="Channel to test."
)
def send_test_cmd(partner: str, channel: str) -> None:
    """Send PARTNER one real test message through the configured channel."""
    with read_only() as (hearth, session, _now):
        p = partners.resolve(session, partner)
        name = p.name
    # Sent with no transaction open: a slow provider must not hold up the database.
    receipt = deliveries.send_test(hearth, p, Channel(channel))
    click.echo(f"sent a test {channel} to {name} (provider id {receipt.provider_id})")


def register(cli: click.Group) -> None:
    cli.add_command(deliveries_group)
    cli.add_command(send_test_cmd)
