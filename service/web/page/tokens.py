"""Page tokens: the secret link to a partner's own page (service/web/page/routes.py).

Like a feed token, 256 random bits shown once and stored only as SHA-256, one per partner,
rotatable. It is a separate secret: a feed URL is handed to calendar providers and must not
carry the power to change anything, while the page can pause the couple's nudges.

The page shows the partner's subscription links, so it needs their feed token, which is not
stored either. It is kept *sealed* under the page token: AES-256-GCM (``cryptography``), the
key derived from the page token by HKDF-SHA256, a random nonce, the partner's id as
associated data. The database alone therefore reveals
neither token; whoever holds the page link can read the feed URL, which they may anyway. An
unsealed token is shown only while its hash is still the partner's feed hash, so a feed
rotated elsewhere (``hearth feed rotate``) is never shown stale. A page token issued without
the current one at hand (``hearth partner link --rotate``, the ``LINK`` text) cannot reseal
the feed token: the page then offers a new calendar link instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.orm import Session

from service.calendar import feed_tokens
from service.core.config import WebSettings
from service.db.models import Partner
from service.domain import grants
from service.domain.events import EventType, record

PATH = "/page/"
_NONCE = 12  # AES-GCM's
_SEAL = b"hearth feed seal"


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


def issue(session: Session, now: datetime, partner: Partner, current: str | None = None) -> str:
    """A new page token for ``partner``; the previous one, and every email's grant issued
    before (service/domain/grants.py), stop working at once.

    ``current``: the page token being replaced, when the partner rotates from their page; the
    feed token sealed under it is sealed again under the new one. A partner without a feed
    token gets one here, so a first link opens on working subscribe buttons."""
    feed = unseal(partner, current) if current is not None else None
    token = secrets.token_urlsafe(feed_tokens.TOKEN_BYTES)
    rotated = partner.page_token_hash is not None
    partner.page_token_hash = digest(token)
    partner.page_token_created_at = now
    partner.feed_token_sealed = None
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
    if feed is None and partner.feed_token_hash is None:
        feed = feed_tokens.issue(session, now, partner)
    if feed is not None:
        partner.feed_token_sealed = seal(token, feed, partner)
    return token


def issue_feed(session: Session, now: datetime, partner: Partner, page_token: str) -> str:
    """A new feed token (the old subscription stops), sealed for the page at ``page_token``."""
    feed = feed_tokens.issue(session, now, partner)
    partner.feed_token_sealed = seal(page_token, feed, partner)
    return feed


def _aead(page_token: str) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL)
    return AESGCM(hkdf.derive(page_token.encode("ascii")))


def _aad(partner: Partner) -> bytes:
    return f"partner:{partner.id}".encode()


def seal(page_token: str, feed_token: str, partner: Partner) -> str:
    raw = base64.urlsafe_b64decode(feed_token + "=")
    nonce = secrets.token_bytes(_NONCE)
    sealed = _aead(page_token).encrypt(nonce, raw, _aad(partner))
    return base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def unseal(partner: Partner, page_token: str) -> str | None:
    """The partner's feed token, if it is sealed under ``page_token`` and still current."""
    if partner.feed_token_sealed is None or partner.feed_token_hash is None:
        return None
    try:
        blob = base64.urlsafe_b64decode(partner.feed_token_sealed)
        raw = _aead(page_token).decrypt(blob[:_NONCE], blob[_NONCE:], _aad(partner))
    except (ValueError, InvalidTag):  # not base64, too short, or not sealed under this token
        return None
    token = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    return token if hmac.compare_digest(digest(token), partner.feed_token_hash) else None


def csrf(page_token: str) -> str:
    """The forms' CSRF token: tied to the page token (a rotation changes it), and useless to
    anyone who cannot already open the page."""
    mac = hmac.new(page_token.encode("ascii"), b"hearth page csrf", hashlib.sha256)
    return mac.hexdigest()[:32]


def csrf_ok(page_token: str, presented: str) -> bool:
    return hmac.compare_digest(csrf(page_token).encode(), presented.encode("utf-8", "replace"))
