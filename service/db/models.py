"""SQLAlchemy 2 models. The database is the single source of truth (see docs/architecture.md).

Instants are stored in UTC (:class:`UTCDateTime` returns aware datetimes on every backend);
ritual times are local wall time plus an IANA zone.
"""

from __future__ import annotations

from datetime import date, datetime, time
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates
from sqlalchemy.types import TypeDecorator

from service.core.text import name_key
from service.core.timeutil import UTC
from service.db.states import (  # the models' column types; importers may take them from here
    Channel,
    ConsentState,
    ExceptionKind,
    ReminderPurpose,
    ReminderState,
    RepairState,
    RitualKind,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware-UTC datetimes in Python; naive UTC on SQLite, timestamptz on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC instant is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _enum(cls: type[StrEnum]) -> sa.Enum:
    return sa.Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=24,
        values_callable=lambda e: [m.value for m in e],
    )


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime}  # noqa: RUF012


def table(model: type[Base]) -> sa.Table:
    """``model.__table__`` typed as the Table it is (for Core statements on hot paths)."""
    t = model.__table__
    assert isinstance(t, sa.Table)
    return t


# Case folding can lengthen a name (ß -> ss): room for a 120-character name that grows.
NAME_KEY_LENGTH = 400


class Couple(Base):
    __tablename__ = "couple"
    __table_args__ = (sa.UniqueConstraint("name_key", name="uq_couple_name_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120), unique=True)
    # How names are matched (service/core/text.py): set with the name, unique, so two names
    # that match each other cannot both exist.
    name_key: Mapped[str] = mapped_column(sa.String(NAME_KEY_LENGTH))
    timezone: Mapped[str] = mapped_column(sa.String(64))
    paused_at: Mapped[datetime | None]
    paused_until: Mapped[datetime | None]
    # Bumped on every change that alters the feed: a cheap ETag pre-check.
    change_stamp: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    partners: Mapped[list[Partner]] = relationship(
        back_populates="couple", cascade="all, delete-orphan", order_by="Partner.id"
    )
    rituals: Mapped[list[Ritual]] = relationship(
        back_populates="couple", cascade="all, delete-orphan", order_by="Ritual.id"
    )

    @validates("name")
    def _keyed(self, _key: str, value: str) -> str:
        self.name_key = name_key(value)
        return value

    def touch(self, now: datetime) -> None:
        """Mark the couple's feed as changed (ETag pre-check) and its row as updated."""
        self.change_stamp += 1
        self.updated_at = now

    def is_paused(self, now: datetime) -> bool:
        if self.paused_at is None:
            return False
        return self.paused_until is None or now < self.paused_until


class Partner(Base):
    __tablename__ = "partner"
    __table_args__ = (
        sa.UniqueConstraint("couple_id", "name"),
        sa.UniqueConstraint("couple_id", "name_key", name="uq_partner_couple_name_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    couple_id: Mapped[int] = mapped_column(sa.ForeignKey("couple.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(120))
    name_key: Mapped[str] = mapped_column(sa.String(NAME_KEY_LENGTH))
    phone: Mapped[str | None] = mapped_column(sa.String(20), index=True)
    email: Mapped[str | None] = mapped_column(sa.String(254))
    timezone: Mapped[str] = mapped_column(sa.String(64))
    # What the partner reads Hearth in (service/core/i18n.LANGUAGES).
    language: Mapped[str] = mapped_column(sa.String(8), default="en", server_default="en")
    channels: Mapped[str] = mapped_column(sa.String(40), default="")  # "sms,email" in order
    quiet_start: Mapped[time | None]
    quiet_end: Mapped[time | None]
    sms_consent: Mapped[ConsentState] = mapped_column(
        _enum(ConsentState), default=ConsentState.UNKNOWN
    )
    sms_consent_at: Mapped[datetime | None]
    sms_consent_source: Mapped[str | None] = mapped_column(sa.String(60))
    email_opted_out_at: Mapped[datetime | None]
    # Discreet by default: lock screens show no "repair" or "conflict".
    full_text: Mapped[bool] = mapped_column(default=False)
    feed_token_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    feed_token_created_at: Mapped[datetime | None]
    # Unsubscribe links are derived (HMAC of id and generation, service/domain/unsubscribe.py),
    # never stored; a new generation (a new address) ends the old link.
    unsubscribe_generation: Mapped[int] = mapped_column(default=1)
    # Legacy plain-text tokens, emptied by migration 0009; the column stays while a previous
    # release may still run beside this one (it reads NULL: no link). Never written.
    unsubscribe_token: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    # The partner's own page (service/calendar/page_tokens.py): only the token's hash, and
    # the feed token sealed under a key only the page token gives, so the page can show the
    # subscription links while the database alone reveals neither token.
    page_token_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    page_token_created_at: Mapped[datetime | None]
    feed_token_sealed: Mapped[str | None] = mapped_column(sa.String(120))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    couple: Mapped[Couple] = relationship(back_populates="partners")

    @validates("name")
    def _keyed(self, _key: str, value: str) -> str:
        self.name_key = name_key(value)
        return value

    @property
    def channel_list(self) -> list[Channel]:
        return [Channel(c) for c in self.channels.split(",") if c]


class ConsentRecord(Base):
    """Every consent change, kept for the carrier audit trail."""

    __tablename__ = "consent_record"

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("partner.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[Channel] = mapped_column(_enum(Channel))
    state: Mapped[ConsentState] = mapped_column(_enum(ConsentState))
    source: Mapped[str] = mapped_column(sa.String(60))
    at: Mapped[datetime]


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
    next_attempt_at: Mapped[datetime]
    claim_token: Mapped[str | None] = mapped_column(sa.String(36))
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.String(300))
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(120), index=True)
    prompt_id: Mapped[int | None]
    body: Mapped[str | None] = mapped_column(sa.Text)
    sent_at: Mapped[datetime | None]
    final_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Event(Base):
    """Append-only domain events: the audit trail and the daemon's wake-up signal."""

    __tablename__ = "event"

    id: Mapped[int] = mapped_column(primary_key=True)
    couple_id: Mapped[int | None] = mapped_column(index=True)  # no FK: survives erasure
    type: Mapped[str] = mapped_column(sa.String(60))
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(index=True)


class Reply(Base):
    __tablename__ = "reply"

    id: Mapped[int] = mapped_column(primary_key=True)
    couple_id: Mapped[int] = mapped_column(
        sa.ForeignKey("couple.id", ondelete="CASCADE"), index=True
    )
    partner_id: Mapped[int] = mapped_column(sa.ForeignKey("partner.id", ondelete="CASCADE"))
    channel: Mapped[Channel] = mapped_column(_enum(Channel), default=Channel.SMS)
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(120), unique=True)
    body: Mapped[str] = mapped_column(sa.Text)  # sealed (service/core/crypto.py)
    keyword: Mapped[str | None] = mapped_column(sa.String(20))
    action: Mapped[str] = mapped_column(sa.String(200))
    ritual_id: Mapped[int | None] = mapped_column(sa.ForeignKey("ritual.id", ondelete="SET NULL"))
    received_at: Mapped[datetime] = mapped_column(index=True)


class EarlyReceipt(Base):
    """A delivery receipt that arrived before its send was recorded (see service.receipts)."""

    __tablename__ = "early_receipt"

    sid: Mapped[str] = mapped_column(sa.String(120), primary_key=True)
    state: Mapped[str] = mapped_column(sa.String(24))
    error: Mapped[str | None] = mapped_column(sa.String(300))
    received_at: Mapped[datetime] = mapped_column(index=True)


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


class DeliveryStat(Base):
    """Anonymous delivery counts that survive a couple's erasure and pruning."""

    __tablename__ = "delivery_stat"
    __table_args__ = (sa.UniqueConstraint("day", "channel", "state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    channel: Mapped[Channel] = mapped_column(_enum(Channel))
    state: Mapped[ReminderState] = mapped_column(_enum(ReminderState))
    count: Mapped[int] = mapped_column(default=0)


class DaemonState(Base):
    """One instant per name that the daemon processes share through the database: the
    dispatcher's heartbeat (``/readyz`` in any process reads it) and the daily prune's claim
    (so that of several workers only one prunes). See service/db/daemon_state.py. The event
    watermark is a number, in ``value`` (service/runtime/event_cursor.py)."""

    __tablename__ = "daemon_state"

    name: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    at: Mapped[datetime]
    # A number where the fact is one: the event id every daemon has handled up to
    # (``events``, see service/runtime/event_cursor.py); None for the instants above.
    value: Mapped[int | None]


class ServerSecret(Base):
    """Keys only the server knows, made at install (migration 0009): ``unsubscribe`` signs
    the unsubscribe links. Never exported."""

    __tablename__ = "server_secret"

    name: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    value: Mapped[str] = mapped_column(sa.String(128))
