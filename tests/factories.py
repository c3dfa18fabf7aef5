"""Test data made through the service layer, as the CLI would make it."""

from __future__ import annotations

from datetime import datetime

from service import couples, partners, rituals
from service.db import Database
from service.models import Couple, Ritual


def couple_with_partners(
    db: Database,
    now: datetime,
    *,
    name: str = "Alice & Sam",
    tz: str = "Europe/Berlin",
    sam_tz: str | None = None,
    sms_consent: bool = True,
) -> int:
    """A couple: Alice (SMS with consent + email) and Sam (email only). Returns the id."""
    with db.session() as s:
        c = couples.add(s, now, name=name, timezone=tz)
        partners.add(
            s,
            now,
            c,
            name="Alice",
            phone="+4915123456789",
            email="alice@example.org",
            timezone=None,
            channels="sms,email",
            quiet_hours=None,
            sms_consent="signup form" if sms_consent else None,
        )
        partners.add(
            s,
            now,
            c,
            name="Sam",
            phone=None,
            email="sam@example.org",
            timezone=sam_tz,
            channels="email",
            quiet_hours=None,
            sms_consent=None,
        )
        return c.id


def add_ritual(
    db: Database, now: datetime, couple_id: int, template: str | None = None, **spec: str
) -> int:
    with db.session() as s:
        c = s.get(Couple, couple_id)
        assert c is not None
        r: Ritual = rituals.add(s, now, c, rituals.RitualSpec(**spec), template=template)
        return r.id
