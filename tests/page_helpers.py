"""A couple with a partner page, served for real: shared by the page's HTTP and browser tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

from service.db.context import Hearth
from service.db.models import Event, Partner, Reminder, ReminderPurpose
from service.domain import partners
from service.web.page import tokens as page_tokens
from tests.factories import add_ritual, couple_with_partners
from tests.web import serve


@dataclass
class Page:
    hearth: Hearth
    base: str  # the server's base URL
    token: str  # Alice's page token
    couple_id: int

    @property
    def path(self) -> str:
        return f"/page/{self.token}"

    @property
    def url(self) -> str:
        return self.base + self.path

    def csrf(self) -> str:
        return page_tokens.csrf(self.token)

    def partner(self, name: str = "Alice") -> Partner:
        with self.hearth.db.session() as s:
            p = s.scalars(sa.select(Partner).where(Partner.name == name)).one()
            s.expunge(p)
            return p

    def events(self) -> list[str]:
        with self.hearth.db.session() as s:
            return list(s.scalars(sa.select(Event.type).order_by(Event.id)))

    def notices(self, name: str = "Sam") -> list[str]:
        with self.hearth.db.session() as s:
            return [
                r.body or ""
                for r in s.scalars(
                    sa.select(Reminder)
                    .join(Partner, Partner.id == Reminder.partner_id)
                    .where(Partner.name == name, Reminder.purpose == ReminderPurpose.NOTICE)
                    .order_by(Reminder.id)
                )
            ]


def make_couple(hearth: Hearth, rituals: int = 1) -> tuple[int, str]:
    """Alice (SMS with consent, and email) and Sam (email), a nightly check-in (and more
    rituals if asked), and Alice's first page link."""
    now = hearth.clock.now()
    cid = couple_with_partners(hearth.db, now)
    add_ritual(hearth.db, now, cid, "five-minute-check-in")
    for i in range(1, rituals):
        add_ritual(
            hearth.db, now, cid, kind="custom", title=f"Ritual {i}", at="19:30", every="weekly:SA"
        )
    with hearth.db.session() as s:
        token = page_tokens.issue(s, now, partners.resolve(s, "Alice"), hearth.keys)
    return cid, token


@contextmanager
def served_page(hearth: Hearth, rituals: int = 1) -> Iterator[Page]:
    cid, token = make_couple(hearth, rituals)
    with serve(hearth) as base:
        yield Page(hearth, base, token, cid)
