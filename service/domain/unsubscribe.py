"""Unsubscribe links: derived, never stored.

A link's token is ``<partner id>.<generation>.<HMAC>``, the HMAC taken with a key only the
server holds (``server_secret``, made by migration 0009, or on first use after a database
was emptied). Nothing in the database, an export or a stored outbox body holds a token;
the dispatcher renders it at send time. A new email address bumps the generation: links
sent to the old address stop working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.core.exceptions import Conflict
from service.core.text import MAX_ID
from service.db import upsert
from service.db.models import Channel, ConsentState, Partner, ServerSecret
from service.domain import partners

KEY_NAME = "unsubscribe"
TOKEN_FORM = re.compile(r"([1-9]\d{0,18})\.([1-9]\d{0,9})\.([A-Za-z0-9_-]{32})")
# Where a stored text (an outbox body) had the link: a reference, rendered at send time.
PLACEHOLDER = "[unsubscribe link]"


# Where a stored text points to the partner's page (a discreet partner's question and
# reveal): rendered at send time into :func:`page_url`, so no stored body holds the token.
def _key(session: Session) -> bytes:
    return server_key(session, KEY_NAME)


def server_key(session: Session, name: str) -> bytes:
    """The server's secret called ``name`` (one per use: unsubscribe links, reply addresses),
    read once per session: a batch of emails derives every link with one query."""
    known: dict[str, bytes] = session.info.setdefault("server_keys", {})
    if name in known:
        return known[name]
    value = session.scalar(sa.select(ServerSecret.value).where(ServerSecret.name == name))
    if value is not None:
        known[name] = bytes.fromhex(value)  # committed already: safe to keep
    else:  # an emptied database (tests truncate): make one, first writer wins
        session.execute(
            upsert.insert(session, ServerSecret)
            .values(name=name, value=secrets.token_hex(32))
            .on_conflict_do_nothing(index_elements=["name"])
        )
        value = session.scalar(sa.select(ServerSecret.value).where(ServerSecret.name == name))
    assert value is not None
    return bytes.fromhex(value)


def rotate_key(session: Session) -> None:
    """A new link key: every unsubscribe link already sent stops working (the next emails
    carry links under the new key). For a key that may have leaked (docs/operations.md)."""
    _key(session)  # made if missing, so the update below has its row
    session.execute(
        sa.update(ServerSecret)
        .where(ServerSecret.name == KEY_NAME)
        .values(value=secrets.token_hex(32))
    )


def _mac(key: bytes, partner_id: int, generation: int) -> str:
    digest = hmac.new(key, f"unsubscribe:{partner_id}:{generation}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode()[:32]


def token(session: Session, partner: Partner) -> str:
    gen = partner.unsubscribe_generation
    return f"{partner.id}.{gen}.{_mac(_key(session), partner.id, gen)}"


def partner_for(session: Session, text: str) -> Partner | None:
    """The partner a token names, if it is one we issued for their current address."""
    m = TOKEN_FORM.fullmatch(text)
    if m is None or int(m[1]) > MAX_ID:  # 19 digits can pass 64 bits: no such row
        return None
    # The MAC first, over the id and generation the token claims: a forged token costs the
    # same whether or not that partner and generation exist, so timing tells nothing.
    if not hmac.compare_digest(_mac(_key(session), int(m[1]), int(m[2])), m[3]):
        return None
    partner = session.get(Partner, int(m[1]))
    if partner is None or int(m[2]) != partner.unsubscribe_generation:
        return None
    return partner


def url(session: Session, base: str, partner: Partner) -> str:
    return f"{base}/unsubscribe/{token(session, partner)}"


def without_link(text: str, link: str | None) -> str:
    """A rendered text as it may be stored (outbox body, export, backup): every link made
    from the token (the unsubscribe link, the footer's way to the partner's page), which
    would let whoever reads it act for the partner, replaced by a reference."""
    if not link:
        return text
    secret = link.rsplit("/", 1)[1]
    return re.sub(rf"\S*{re.escape(secret)}", PLACEHOLDER, text)


# Every link that acts for the partner (an unsubscribe link, an email's or a text's grant to
# the page): each send makes its own, and stored bodies hold the placeholder instead.
_SECRET_LINK = re.compile(r"\S*/(?:unsubscribe|page/from-email)/[A-Za-z0-9._~-]+")


def masked(text: str) -> str:
    """``text`` with its secret links replaced by the placeholder: a stored body and the text
    the provider holds then compare equal (settling an unknown send, service/channels)."""
    return _SECRET_LINK.sub(PLACEHOLDER, text)


def resubscribe(session: Session, now: datetime, partner: Partner, source: str) -> None:
    """The way back for a partner who unsubscribed from email and asks for it again (an
    admin records where the request came from)."""
    if partner.email_opted_out_at is None:
        raise Conflict(f"partner {partner.name!r} is not unsubscribed from email")
    partners.set_consent(
        session, now, partner, ConsentState.CONSENTED, source, channel=Channel.EMAIL
    )
