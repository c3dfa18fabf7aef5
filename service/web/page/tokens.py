"""Page tokens: the secret link to a partner's own page (service/web/page/routes.py).

Like a feed token, 256 random bits shown once and stored only as SHA-256, one per partner,
rotatable. It is a separate secret: a feed URL is handed to calendar providers and must not
carry the power to change anything, while the page can pause the couple's nudges.

The page shows the partner's subscription links from the feed token kept under the
encryption keys (service/calendar/feed_keep.py): any page link of theirs shows it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.calendar import feed_keep, feed_tokens
from service.core.config import WebSettings
from service.core.crypto import Keyring
from service.db.models import Partner
from service.domain import grants
from service.domain.events import EventType, record

PATH = "/page/"


def well_formed(token: str) -> bool:
    return feed_tokens.well_formed(token)  # the same shape: token_urlsafe(32)


def digest(token: str) -> str:
    return feed_tokens.digest(token)


def url(web: WebSettings, token: str) -> str:
    return f"{web.public_base_url}{PATH}{token}"


def find(session: Session, token: str) -> Partner | None:
    """The partner whose page token this is; a malformed one never reaches the database."""
    if not well_formed(token):
        return None
    return session.scalar(sa.select(Partner).where(Partner.page_token_hash == digest(token)))


def issue(session: Session, now: datetime, partner: Partner, keys: Keyring) -> str:
    """A new page token for ``partner``; the previous one, and every email's grant issued
    before (service/domain/grants.py), stop working at once. With ``keys``, a partner without
    a feed token gets one here, so a first link opens on working subscribe buttons."""
    token = secrets.token_urlsafe(feed_tokens.TOKEN_BYTES)
    rotated = partner.page_token_hash is not None
    partner.page_token_hash = digest(token)
    partner.page_token_created_at = now
    partner.updated_at = now
    grants.revoke_all(session, partner)
    session.flush()
    record(
        session,
        EventType.PAGE_ROTATED if rotated else EventType.PAGE_ISSUED,
        now,
        partner.couple_id,
        partner_id=partner.id,
    )
    feed_keep.ensure(session, now, partner, keys)
    return token


def csrf(page_token: str) -> str:
    """The forms' CSRF token: tied to the page token (a rotation changes it), and useless to
    anyone who cannot already open the page."""
    mac = hmac.new(page_token.encode("ascii"), b"hearth page csrf", hashlib.sha256)
    return mac.hexdigest()[:32]


def csrf_ok(page_token: str, presented: str) -> bool:
    return hmac.compare_digest(csrf(page_token).encode(), presented.encode("utf-8", "replace"))
