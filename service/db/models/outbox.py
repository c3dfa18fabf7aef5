"""The outbox: reminder rows, receipts that came early, anonymous delivery counts."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service.db.models.base import Base, _enum
from service.db.states import (
    Channel,
    ReminderPurpose,
    ReminderState,
)


class Reminder(Base):
    """The outbox. One row per message Hearth means to send; the unique key makes planning
    idempotent."""

    __tablename__ = "reminder"
    __table_args__ = (
        sa.UniqueConstraint(
            "ritual_id",
            "occurrence_start",
            "partner_id",
            "channel",
            "offset_minutes",
            "purpose",
            name="uq_reminder_slot",
        ),
        sa.Index("ix_reminder_due", "state", "next_attempt_at"),
        sa.Index("ix_reminder_couple_state", "couple_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    couple_id: Mapped[int] = mapped_column(sa.ForeignKey("couple.id", ondelete="CASCADE"))
    # None for a notice that belongs to no ritual (its text is stored in ``body``).
    ritual_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ritual.id", ondelete="CASCADE"))
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partner.id", ondelete="CASCADE"))
    channel: Mapped[Channel] = mapped_column(_enum(Channel))
    offset_minutes: Mapped[int]
    purpose: Mapped[ReminderPurpose] = mapped_column(
        _enum(ReminderPurpose), default=ReminderPurpose.NUDGE
    )
    occurrence_start: Mapped[datetime]
    due_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    state: Mapped[ReminderState] = mapped_column(
        _enum(ReminderState), default=ReminderState.SCHEDULED
    )
    attempts: Mapped[int] = mapped_column(default=0)
    # A fallback planned behind the partner's preferred channel: sent only when that one could
    # not deliver (service/outbox/fallback.py); forecasts leave it out of the demand.
    standby: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    next_attempt_at: Mapped[datetime]
    claim_token: Mapped[str | None] = mapped_column(sa.String(36))
    lease_until: Mapped[datetime | None]
    # Set while whether the provider took the last send is unknown (its answer was lost, or
    # its claim went stale): the dispatcher asks the provider before sending it again.
    unknown_since: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.String(300))
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(120), index=True)
    prompt_id: Mapped[int | None]
    body: Mapped[str | None] = mapped_column(sa.Text)
    sent_at: Mapped[datetime | None]
    final_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class EarlyReceipt(Base):
    """A delivery receipt that arrived before its send was recorded (see service.receipts)."""

    __tablename__ = "early_receipt"

    sid: Mapped[str] = mapped_column(sa.String(120), primary_key=True)
    state: Mapped[str] = mapped_column(sa.String(24))
    error: Mapped[str | None] = mapped_column(sa.String(300))
    received_at: Mapped[datetime] = mapped_column(index=True)


class DeliveryStat(Base):
    """Anonymous delivery counts that survive a couple's erasure and pruning."""

    __tablename__ = "delivery_stat"
    __table_args__ = (sa.UniqueConstraint("day", "channel", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    channel: Mapped[Channel] = mapped_column(_enum(Channel))
    state: Mapped[ReminderState] = mapped_column(_enum(ReminderState))
    count: Mapped[int] = mapped_column(default=0)
