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
from functools import lru_cache
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.config import WebSettings
from service.events import EventType, record
from service.models import Couple, Partner

TOKEN_BYTES = 32
_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32); used with fullmatch


def well_formed(token: str) -> bool:
    """Whether ``token`` could be one we issued. ``fullmatch``: ``$`` would also accept a
    trailing newline, letting a value no token has reach the hash and the database."""
    return _SHAPE.fullmatch(token) is not None


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


_STAMP = (
    sa.select(Partner.couple_id, Couple.change_stamp, Couple.created_at)
    .join(Couple, Couple.id == Partner.couple_id)
    .where(Partner.feed_token_hash == sa.bindparam("digest"))
)


@lru_cache(maxsize=8)
def _stamp_sql(engine: Engine) -> tuple[str, bool]:
    """The stamp query as the engine's driver takes it, and whether its parameters are
    positional (SQLite's ``?``) or named (psycopg's ``%(digest)s``)."""
    compiled = _STAMP.compile(dialect=engine.dialect)
    return str(compiled), bool(compiled.positional)


class Stamp(NamedTuple):
    couple_id: int
    change_stamp: int
    # The couple row's identity beyond its id: SQLite hands a removed couple's id to the
    # next one, whose stamp starts over, and a cache must never take one for the other.
    born: object  # as the driver returns it (text on SQLite); only compared


def couple_stamp(engine: Engine, token: str) -> Stamp | None:
    """The couple whose partner holds ``token``, and its change stamp, in one query.

    Every calendar poll runs this, so it talks to the driver on a pooled connection directly:
    through ``Connection.execute`` the same query cost five times as much on SQLite (the
    BEGIN, the statement pipeline, the ROLLBACK on close; docs/performance.md)."""
    if not well_formed(token):
        return None
    sql, positional = _stamp_sql(engine)
    key = digest(token)
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        try:
            cursor.execute(sql, (key,) if positional else {"digest": key})
            row = cursor.fetchone()
        finally:
            cursor.close()
    finally:
        conn.close()  # back to the pool, which ends any transaction the driver began
    return None if row is None else Stamp(int(row[0]), int(row[1]), row[2])
