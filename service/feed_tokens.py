"""Feed tokens: 256 random bits from ``secrets``, shown once, stored only as SHA-256.

Each partner has their own token, so one can be revoked (rotated) without breaking the other's
subscription. Lookup hashes the presented token and compares hashes in the database: the
plain token exists only in the URL the partner holds.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from service.config import WebSettings
from service.events import EventType, record
from service.models import Couple, Partner

TOKEN_BYTES = 32
_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class FeedUrls:
    https: str
    webcal: str


def urls(web: WebSettings, token: str) -> FeedUrls:
    https = f"{web.public_base_url}/feeds/{token}.ics"
    return FeedUrls(https=https, webcal="webcal://" + https.split("://", 1)[1])


def issue(session: Session, now: datetime, partner: Partner) -> str:
    """A new token for ``partner``; the previous one stops working at once."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    rotated = partner.feed_token_hash is not None
    partner.feed_token_hash = digest(token)
    partner.feed_token_created_at = now
    partner.updated_at = now
    session.flush()
    record(
        session,
        EventType.FEED_ROTATED if rotated else EventType.FEED_ISSUED,
        now,
        partner.couple_id,
        partner_id=partner.id,
    )
    return token


# Built once: every calendar poll runs it, and building a statement costs more than running it.
_STAMP = (
    sa.select(Partner.couple_id, Couple.change_stamp)
    .join(Couple, Couple.id == Partner.couple_id)
    .where(Partner.feed_token_hash == sa.bindparam("digest"))
)


def couple_stamp(conn: Connection, token: str) -> tuple[int, int] | None:
    """(couple id, change stamp) for the couple whose partner holds ``token``, in one query."""
    if not _SHAPE.match(token):
        return None
    row = conn.execute(_STAMP, {"digest": digest(token)}).first()
    return None if row is None else (row[0], row[1])
