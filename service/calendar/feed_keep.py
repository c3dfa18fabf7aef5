"""A partner's feed token kept sealed under the service's encryption keys.

A feed token is stored as a hash, and a page shows it only if it was sealed under that very
page link (service/web/page/tokens.py). A page link issued any other way (``hearth partner
link``, the ``LINK`` text, an email's button) could then only offer a *new* calendar link,
which cuts off the calendar the partner already subscribed. Kept here as well, under the
keys that seal answers (Fernet, service/core/crypto.py), any page of theirs shows the
subscription they have, and ``hearth feed url`` can show it again. Without keys nothing is
kept and both fall back to what they did before. After a key rotation a copy under a
dropped key no longer opens: the page then offers a new link, as without keys.
"""

from __future__ import annotations

import hmac

from service.calendar import feed_tokens
from service.core.crypto import Keyring
from service.db.models import Partner


def keep(partner: Partner, feed_token: str, keys: Keyring) -> None:
    """Keep ``feed_token`` (the partner's current one) for their pages and the CLI."""
    partner.feed_token_kept = keys.seal(feed_token) if keys.configured else None


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
