"""What Hearth keeps besides the domain: events, replies, daemon state, server secrets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from service.db.models.base import Base, _enum
from service.db.states import (
    Channel,
)


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


class PageGrant(Base):
    """An email's way to the partner's page (service/domain/grants.py): one per email send,
    only its hash kept, good once and for a limited time, dropped when the page link is
    rotated."""

    __tablename__ = "page_grant"

    id: Mapped[int] = mapped_column(primary_key=True)
    partner_id: Mapped[int] = mapped_column(
        sa.ForeignKey("partner.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    reminder_id: Mapped[int | None]  # the send it went out with; no FK: rows are pruned
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
