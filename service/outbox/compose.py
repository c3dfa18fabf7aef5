"""Composing a claimed reminder's message: the batch's shared state, the prompt, the text.

A claim batch loads what its rows need once (:class:`Batch`: rituals with their couples and
exceptions, partners, prompt pools, rotations), so rendering a batch costs a fixed number of
queries. Both partners of a couple get the same prompt for the same occurrence, and a retry
keeps the prompt it had.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from service.channels.base import Message
from service.core.crypto import Keyring
from service.db import upsert
from service.db.models import (
    Channel,
    CheckIn,
    Couple,
    Partner,
    Reminder,
    ReminderPurpose,
    Ritual,
    RitualKind,
    table,
)
from service.db.states import ONE_OFF_PURPOSES
from service.domain import grants, prompts, reply_address
from service.domain import unsubscribe as links
from service.domain.answers import asks
from service.outbox import texts
from service.outbox.gates import actual_start, address

# A text this much past its due time tells the time from now ("in 10 min"), not as planned.
LATE = timedelta(minutes=2)


def render(
    s: Session,
    r: Reminder,
    batch: Batch,
    now: datetime,
    rng: random.Random,
    base_url: str,
    keys: Keyring,
    reply_base: str = "",
) -> Message:
    """The message for ``r``; records the prompt it takes and the text in the row. With
    ``reply_base`` (``imap.reply_address``) an email's Reply-To is the partner's own plus
    address, so that replying works (service/replies/mailbox.py)."""
    partner = batch.partners[r.partner_id]
    reply_to = None
    if reply_base and r.channel is Channel.EMAIL:
        reply_to = reply_address.address(s, reply_base, partner)  # derived, never stored
    if r.purpose in ONE_OFF_PURPOSES or r.ritual_id is None:
        assert r.body is not None, "a notice carries its text"
        body = keys.open(r.body)  # a reply's message is sealed at rest
        if grants.PAGE_LINK in body:  # a grant for this send only, never stored
            body = body.replace(grants.PAGE_LINK, _grant(s, now, base_url, partner, r))
        to = address(partner, r.channel)
        return texts.notice(body, r.channel, to, r.id, partner.language, reply_to)
    ritual = batch.rituals[r.ritual_id]
    prompt_text = None
    if r.purpose in (ReminderPurpose.NUDGE, ReminderPurpose.SNOOZE):
        # A retry keeps its prompt; both partners share the occurrence's prompt.
        pid = r.prompt_id or batch.shared_prompt(r)
        prompt = s.get(prompts.Prompt, pid) if pid else None
        if prompt is None:
            prompt = prompts.next_prompt(
                s,
                ritual,
                now,
                rng,
                pool=batch.pool(ritual.kind),
                rotation=batch.rotation(ritual.id, now),
            )
        if prompt is not None:
            batch.remember_prompt(r, prompt.id)
            r.prompt_id, prompt_text = prompt.id, prompt.text
    # Derived at send time; the stored body keeps only a reference (domain/unsubscribe).
    unsubscribe = links.url(s, base_url, partner) if r.channel is Channel.EMAIL else None
    # The way to the page: a grant for this send only (domain/grants), in the email's footer
    # and, when the shared question is asked, in a discreet partner's text (they answer there).
    page = None
    if unsubscribe or (not partner.full_text and prompt_text and asks(ritual)):
        page = _grant(s, now, base_url, partner, r)
    start = actual_start(ritual, r.occurrence_start)  # a moved occurrence's new time
    late = now if now - r.due_at > LATE else None
    mctx = texts.Context(
        ritual, partner, r.purpose, start, prompt_text, unsubscribe, late, page, reply_to
    )
    message = texts.render(mctx, r.channel, address(partner, r.channel), r.id)
    r.body = links.without_link(links.without_link(message.text, unsubscribe), page)
    return message


def _grant(s: Session, now: datetime, base_url: str, partner: Partner, r: Reminder) -> str:
    return grants.url(base_url, grants.issue(s, now, partner, r.id))


class Batch:
    """What a batch needs besides the reminder rows, loaded once."""

    def __init__(self, s: Session, rows: list[Reminder], now: datetime) -> None:
        self.s = s
        ritual_ids = {r.ritual_id for r in rows if r.ritual_id is not None}
        partner_ids = {r.partner_id for r in rows}
        self.rituals = {
            r.id: r
            for r in s.scalars(
                sa.select(Ritual)
                .where(Ritual.id.in_(ritual_ids))
                .options(
                    # The partners too: whether a ritual asks (texts, the page link) counts them.
                    joinedload(Ritual.couple).selectinload(Couple.partners),
                    joinedload(Ritual.exceptions),
                )
            ).unique()
        }
        self.partners = {
            p.id: p for p in s.scalars(sa.select(Partner).where(Partner.id.in_(partner_ids)))
        }
        self.now = now
        self._pools: dict[RitualKind, list[int]] = {}
        self._keep: list[prompts.Prompt] = []
        # Rituals whose rows may take a new prompt from the rotation.
        rotating = sorted(
            {
                r.ritual_id
                for r in rows
                if r.ritual_id is not None
                and r.prompt_id is None
                and r.purpose in (ReminderPurpose.NUDGE, ReminderPurpose.SNOOZE)
            }
        )
        self._rotations = {rot.ritual_id: rot for rot in lock_rotations(s, rotating, now)}
        self._shared: dict[tuple[int | None, datetime], int] = {}
        if rows:
            # Read after the rotation locks: a worker that prepared the other partner's row
            # of the occurrence has committed its prompt by the time we get the lock.
            # Both partners of a couple get the same prompt for the same occurrence.
            for rid, start, pid in s.execute(
                sa.select(Reminder.ritual_id, Reminder.occurrence_start, Reminder.prompt_id).where(
                    Reminder.ritual_id.in_(ritual_ids),
                    Reminder.occurrence_start.in_({r.occurrence_start for r in rows}),
                    Reminder.prompt_id.is_not(None),
                )
            ):
                if pid is not None:
                    self._shared[(rid, start)] = pid

    def pool(self, kind: RitualKind) -> list[int]:
        if kind not in self._pools:
            # Loading the kind's prompts puts them in the identity map: no query per send.
            found = list(
                self.s.scalars(
                    sa.select(prompts.Prompt).where(
                        prompts.Prompt.kind == kind, prompts.Prompt.enabled
                    )
                )
            )
            if not found:
                prompts.sync_builtin(self.s, self.now)
                found = [
                    p
                    for p in self.s.scalars(sa.select(prompts.Prompt))
                    if p.kind is kind and p.enabled
                ]
            self._keep.extend(found)  # the identity map holds objects only weakly
            self._pools[kind] = sorted(p.id for p in found)
        return self._pools[kind]

    def rotation(self, ritual_id: int, now: datetime) -> prompts.PromptRotation:
        rot = self._rotations.get(ritual_id)
        if rot is None:
            rot = prompts.PromptRotation(
                ritual_id=ritual_id, remaining=[], last_prompt_id=None, updated_at=now
            )
            self.s.add(rot)
            self._rotations[ritual_id] = rot
        return rot

    def shared_prompt(self, r: Reminder) -> int | None:
        return self._shared.get((r.ritual_id, r.occurrence_start))

    def remember_prompt(self, r: Reminder, prompt_id: int) -> None:
        self._shared[(r.ritual_id, r.occurrence_start)] = prompt_id

    def answered(self, r: Reminder) -> bool:
        """Whether the reminder's partner has reported its occurrence DONE."""
        found = self.s.scalar(
            sa.select(CheckIn.id).where(
                CheckIn.ritual_id == r.ritual_id,
                CheckIn.occurrence_start == r.occurrence_start,
                CheckIn.partner_id == r.partner_id,
            )
        )
        return found is not None


def lock_rotations(
    s: Session, ritual_ids: list[int], now: datetime
) -> list[prompts.PromptRotation]:
    """The rituals' rotation rows, made where missing and locked until the batch commits.

    On PostgreSQL two workers may prepare the two partners' rows of one occurrence at once;
    unlocked, each would find no prompt chosen yet, each would take the next one (two
    different prompts for one evening), and the later commit would overwrite the other's
    rotation. With the lock the second waits for the first to commit, then reads its prompt
    and its rotation. Inserting first (ON CONFLICT DO NOTHING) gives a ritual's very first
    prompt a row to lock; ids in order keep two workers from deadlocking. SQLite: prepare
    runs under the one write lock already, and the same statements serve."""
    if not ritual_ids:
        return []
    t = table(prompts.PromptRotation)
    # Rows as executemany parameters, not a multi-row VALUES: that statement is compiled
    # anew for each batch size, and cost a tenth of a burst's prepare.
    s.execute(
        upsert.insert(s, t).on_conflict_do_nothing(index_elements=[t.c.ritual_id]),
        [
            {"ritual_id": rid, "remaining": [], "last_prompt_id": None, "updated_at": now}
            for rid in ritual_ids
        ],
    )
    return list(
        s.scalars(
            sa.select(prompts.PromptRotation)
            .where(prompts.PromptRotation.ritual_id.in_(ritual_ids))
            .order_by(prompts.PromptRotation.ritual_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )
