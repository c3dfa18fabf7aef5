"""A partner's feed token kept sealed under the service's encryption keys.

A feed token is stored as a hash; to show a partner the calendar they already subscribed
(on any page link of theirs, and in ``hearth feed url``) the token itself is kept as well,
sealed under the keys that seal answers (Fernet, service/core/crypto.py, column
``partner.feed_token_kept``). A copy is shown only while its hash is still the partner's feed
hash, so a feed rotated elsewhere is never shown stale. Without keys nothing is kept: the page
offers a new calendar link and shows it once, and ``hearth feed url`` refuses a second time.
A copy under a dropped key no longer opens, so ``hearth crypto reencrypt`` seals it again
under the current key before the old one is dropped (service/db/sealed.py).
"""

from __future__ import annotations

import hmac
from datetime import datetime

from sqlalchemy.orm import Session

from service.calendar import feed_tokens
from service.core.crypto import Keyring
from service.db.models import Partner


def keep(partner: Partner, feed_token: str, keys: Keyring) -> None:
    """Keep ``feed_token`` (the partner's current one) for their pages and the CLI."""
    partner.feed_token_kept = keys.seal(feed_token) if keys.configured else None


def issue(
    session: Session,
    now: datetime,
    partner: Partner,
    keys: Keyring,
    *,
    first: bool = False,
    ref: str = "",
) -> str:
    """A new feed token (the old subscription stops, see :func:`feed_tokens.issue`), kept."""
    token = feed_tokens.issue(session, now, partner, first=first, ref=ref)
    keep(partner, token, keys)
    return token


def ensure(session: Session, now: datetime, partner: Partner, keys: Keyring) -> None:
    """With keys, a first feed token for a partner who has none, so a new page link opens on
    working subscribe buttons; an existing subscription is never replaced."""
    if keys.configured and partner.feed_token_hash is None:
        issue(session, now, partner, keys)


def recover(partner: Partner, keys: Keyring | None) -> str | None:
    """The partner's current feed token, if it was kept and still is their feed token."""
    if keys is None or not keys.configured or partner.feed_token_hash is None:
        return None
    if partner.feed_token_kept is None:
        return None
    token = keys.open(partner.feed_token_kept)
    if not feed_tokens.well_formed(token):
        return None
    current = partner.feed_token_hash
    return token if hmac.compare_digest(feed_tokens.digest(token), current) else None
