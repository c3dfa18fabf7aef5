"""Page grants: the link in an email that opens the partner's page.

A page link itself is never stored (only its hash), so an email cannot carry it. Each email
send carries a grant instead: 256 random bits, stored as SHA-256, bound to that send (its
reminder id), good for :data:`LIFETIME` and for one use. Using it issues a new page link
(service/web/page/tokens.py), and every page-link issue drops all of the partner's
grants: the one just used, and every email sent before a "new link to this page". A
forwarded email is therefore a key for at most a week and one page opening, and the partner
takes it back by rotating their page link. docs/operations.md has the whole link model.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import PageGrant, Partner

LIFETIME = timedelta(days=7)
PATH = "/page/from-email/"
# Where a stored text links to the page: replaced by a fresh grant when it is sent.
PAGE_LINK = "[page link]"
TOKEN_BYTES = 32
_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32); fullmatch only


def well_formed(token: str) -> bool:
    return _SHAPE.fullmatch(token) is not None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def url(base: str, token: str) -> str:
    return f"{base}{PATH}{token}"


def issue(session: Session, now: datetime, partner: Partner, reminder_id: int | None) -> str:
    """A new grant for one email send; the partner's expired grants go at the same time, so
    the table holds at most a week of one partner's emails."""
    session.execute(
        sa.delete(PageGrant).where(PageGrant.partner_id == partner.id, PageGrant.expires_at <= now)
    )
    token = secrets.token_urlsafe(TOKEN_BYTES)
    session.add(
        PageGrant(
            partner_id=partner.id,
            token_hash=digest(token),
            reminder_id=reminder_id,
            created_at=now,
            expires_at=now + LIFETIME,
        )
    )
    session.flush()
    return token


def find(session: Session, token: str, now: datetime) -> Partner | None:
    """The partner an unexpired grant opens; a malformed token never reaches the database."""
    if not well_formed(token):
        return None
    grant = session.scalar(sa.select(PageGrant).where(PageGrant.token_hash == digest(token)))
    if grant is None or grant.expires_at <= now:
        return None
    return session.get(Partner, grant.partner_id)


def spend(session: Session, token: str, now: datetime) -> Partner | None:
    """Like :func:`find`, and the grant is gone: of two requests racing with one grant, the
    second one's delete finds no row (it waits for the first's on PostgreSQL)."""
    partner = find(session, token, now)
    if partner is None:
        return None
    gone = session.execute(sa.delete(PageGrant).where(PageGrant.token_hash == digest(token)))
    return partner if gone.rowcount == 1 else None  # type: ignore[attr-defined]


def revoke_all(session: Session, partner: Partner) -> None:
    """Every grant of ``partner`` stops working (a new page link was issued)."""
    session.execute(sa.delete(PageGrant).where(PageGrant.partner_id == partner.id))


def csrf(token: str) -> str:
    """The button's CSRF token, tied to the grant like the page's forms are to the page."""
    return hmac.new(token.encode("ascii"), b"hearth grant csrf", hashlib.sha256).hexdigest()[:32]


def csrf_ok(token: str, presented: str) -> bool:
    return hmac.compare_digest(csrf(token).encode(), presented.encode("utf-8", "replace"))
