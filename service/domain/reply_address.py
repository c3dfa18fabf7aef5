"""Reply addresses: each partner's own plus address, so a reply names its writer by a token.

The address is ``<local>+<token>@<domain>`` for the configured ``imap.reply_address``
``<local>@<domain>``; the token is ``<partner id>-<generation>-<HMAC>``, the HMAC (160 bits,
lower-case base32: mail systems may fold an address's case) taken with a server key of its
own (``server_secret`` "reply"). It is derived at send time and never stored. The generation
is the partner's address generation: a new email address ends the old reply address, as it
ends the old unsubscribe link. A message's ``From`` is never used to find its writer: anyone
can forge it, nobody can make a token without the server's key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from email.utils import getaddresses

from sqlalchemy.orm import Session

from service.core.text import MAX_ID
from service.db.models import Partner
from service.domain.unsubscribe import server_key

KEY_NAME = "reply"
TOKEN_FORM = re.compile(r"([1-9]\d{0,18})-([1-9]\d{0,9})-([a-z2-7]{32})")


def _mac(key: bytes, partner_id: int, generation: int) -> str:
    digest = hmac.new(key, f"reply:{partner_id}:{generation}".encode(), hashlib.sha256)
    return base64.b32encode(digest.digest()[:20]).decode().lower()


def token(session: Session, partner: Partner) -> str:
    gen = partner.unsubscribe_generation
    return f"{partner.id}-{gen}-{_mac(server_key(session, KEY_NAME), partner.id, gen)}"


def address(session: Session, base: str, partner: Partner) -> str:
    """The partner's reply address for the base address ``base`` (``hearth@example.org``)."""
    local, _, domain = base.rpartition("@")
    return f"{local}+{token(session, partner)}@{domain}"


def tokens_in(headers: Iterable[str], base: str) -> list[str]:
    """The tokens of every address to ``base``'s plus form in these header values (To, Cc,
    Delivered-To...), in order, each once; case-insensitive as mail systems are."""
    local, _, domain = base.lower().rpartition("@")
    found: list[str] = []
    for _name, addr in getaddresses([str(h) for h in headers]):
        a_local, _, a_domain = addr.strip().lower().rpartition("@")
        head, plus, tag = a_local.partition("+")
        if plus and head == local and a_domain == domain and tag not in found:
            found.append(tag)
    return found


def partner_for(session: Session, text: str) -> Partner | None:
    """The partner a token names, if it is one we derive for their current address."""
    m = TOKEN_FORM.fullmatch(text.lower())
    if m is None or int(m[1]) > MAX_ID:
        return None
    partner = session.get(Partner, int(m[1]))
    if partner is None or int(m[2]) != partner.unsubscribe_generation:
        return None
    expected = _mac(server_key(session, KEY_NAME), partner.id, partner.unsubscribe_generation)
    return partner if hmac.compare_digest(expected, m[3]) else None
