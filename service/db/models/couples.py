"""Couples, their partners, and each partner's consent history."""

from __future__ import annotations

from datetime import datetime, time
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from service.core.text import name_key
from service.db.models.base import NAME_KEY_LENGTH, Base, _enum
from service.db.states import (
    Channel,
    ConsentState,
)

if TYPE_CHECKING:
    from service.db.models.rituals import Ritual


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
    # False: one nudge per moment, by the first channel that can deliver it (the next only
    # when it cannot, service/domain/routing.py); True: every channel, asked for explicitly.
    both_channels: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
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
    # The partner's own page (service/web/page/tokens.py): only the token's hash.
    page_token_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    page_token_created_at: Mapped[datetime | None]
    # The feed token sealed under the encryption keys (service/calendar/feed_keep.py), so
    # any page link of the partner's shows the subscription they have.
    feed_token_kept: Mapped[str | None] = mapped_column(sa.Text)
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
