"""Rituals and what hangs on them: exceptions, check-ins, answers, repair talks, prompts."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db.models.base import Base, _enum
from service.db.states import (
    Channel,
    ExceptionKind,
    RepairState,
    RitualKind,
)

if TYPE_CHECKING:
    from service.db.models.couples import Couple


class Ritual(Base):
    __tablename__ = "ritual"

    id: Mapped[int] = mapped_column(primary_key=True)
    couple_id: Mapped[int] = mapped_column(
        sa.ForeignKey("couple.id", ondelete="CASCADE"), index=True
    )
    uid: Mapped[str] = mapped_column(sa.String(80), unique=True)
    kind: Mapped[RitualKind] = mapped_column(_enum(RitualKind))
    template: Mapped[str | None] = mapped_column(sa.String(40))
    title: Mapped[str] = mapped_column(sa.String(120))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    # Schedule: local wall time + zone; dtstart_date anchors the RRULE (its DTSTART).
    dtstart_date: Mapped[date]
    start_time: Mapped[time | None]  # None: all-day
    duration_minutes: Mapped[int] = mapped_column(default=5)
    rrule: Mapped[str | None] = mapped_column(sa.String(300))  # None: a one-off occurrence
    timezone: Mapped[str] = mapped_column(sa.String(64))
    reminder_offsets: Mapped[str] = mapped_column(sa.String(80), default="0")  # minutes before
    channels: Mapped[str] = mapped_column(sa.String(40), default="")  # "" = partners' own
    paused_at: Mapped[datetime | None]
    paused_until: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]  # removed: the feed ends the series here (UNTIL)
    version: Mapped[int] = mapped_column(default=1)  # feed SEQUENCE
    # The shared question: the prompt is asked, answers are revealed once both answered.
    ask: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    couple: Mapped[Couple] = relationship(back_populates="rituals")
    exceptions: Mapped[list[OccurrenceException]] = relationship(
        back_populates="ritual",
        cascade="all, delete-orphan",
        order_by="OccurrenceException.original_start",
    )

    @property
    def offsets(self) -> list[int]:
        return [int(x) for x in self.reminder_offsets.split(",") if x != ""]

    @property
    def channel_list(self) -> list[Channel]:
        return [Channel(c) for c in self.channels.split(",") if c]

    def is_paused(self, now: datetime) -> bool:
        if self.paused_at is None:
            return False
        return self.paused_until is None or now < self.paused_until


class OccurrenceException(Base):
    __tablename__ = "occurrence_exception"
    __table_args__ = (sa.UniqueConstraint("ritual_id", "original_start"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ritual_id: Mapped[int] = mapped_column(sa.ForeignKey("ritual.id", ondelete="CASCADE"))
    original_start: Mapped[datetime]
    kind: Mapped[ExceptionKind] = mapped_column(_enum(ExceptionKind))
    new_start: Mapped[datetime | None]
    source: Mapped[str] = mapped_column(sa.String(60), default="admin")
    created_at: Mapped[datetime]

    ritual: Mapped[Ritual] = relationship(back_populates="exceptions")


class CheckIn(Base):
    """A partner reported an occurrence DONE."""

    __tablename__ = "check_in"
    __table_args__ = (sa.UniqueConstraint("ritual_id", "occurrence_start", "partner_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ritual_id: Mapped[int] = mapped_column(sa.ForeignKey("ritual.id", ondelete="CASCADE"))
    occurrence_start: Mapped[datetime]
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partner.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    source: Mapped[str] = mapped_column(sa.String(30), default="sms")


class Answer(Base):
    """One partner's answer to an occurrence's shared question and/or their mood (1-5).

    ``text`` is sealed (service/core/crypto.py), never clear. ``revealed_at``: when the
    other partner's copy was queued; from then on the answer is final. ``late``: it came
    after the occurrence closed and is never revealed."""

    __tablename__ = "answer"
    __table_args__ = (sa.UniqueConstraint("ritual_id", "occurrence_start", "partner_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    couple_id: Mapped[int] = mapped_column(
        sa.ForeignKey("couple.id", ondelete="CASCADE"), index=True
    )
    ritual_id: Mapped[int] = mapped_column(sa.ForeignKey("ritual.id", ondelete="CASCADE"))
    occurrence_start: Mapped[datetime]
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partner.id", ondelete="CASCADE"))
    text: Mapped[str | None] = mapped_column(sa.Text)
    mood: Mapped[int | None]
    late: Mapped[bool] = mapped_column(default=False)
    answered_at: Mapped[datetime] = mapped_column(index=True)
    revealed_at: Mapped[datetime | None]
    # The question asked (migration 0011): "our questions" on the page shows it.
    prompt_id: Mapped[int | None] = mapped_column(sa.ForeignKey("prompt.id", ondelete="SET NULL"))


class RepairRequest(Base):
    __tablename__ = "repair_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    couple_id: Mapped[int] = mapped_column(
        sa.ForeignKey("couple.id", ondelete="CASCADE"), index=True
    )
    requested_by: Mapped[int | None] = mapped_column(
        sa.ForeignKey("partner.id", ondelete="SET NULL")
    )
    requested_at: Mapped[datetime]
    state: Mapped[RepairState] = mapped_column(_enum(RepairState))
    slot_start: Mapped[datetime | None]
    ritual_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ritual.id", ondelete="SET NULL"))
    source: Mapped[str] = mapped_column(sa.String(30), default="admin")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Prompt(Base):
    __tablename__ = "prompt"
    __table_args__ = (sa.UniqueConstraint("kind", "text"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[RitualKind] = mapped_column(_enum(RitualKind))
    text: Mapped[str] = mapped_column(sa.String(300))
    builtin: Mapped[bool] = mapped_column(default=False)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]


class PromptRotation(Base):
    """Per ritual: the prompt ids still to show in this cycle, and the last one shown."""

    __tablename__ = "prompt_rotation"

    ritual_id: Mapped[int] = mapped_column(
        sa.ForeignKey("ritual.id", ondelete="CASCADE"), primary_key=True
    )
    remaining: Mapped[list[int]] = mapped_column(sa.JSON, default=list)
    last_prompt_id: Mapped[int | None]
    updated_at: Mapped[datetime]
