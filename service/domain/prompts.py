"""Prompt pools and their rotation.

Built-in pools live in ``service/domain/prompt_texts/<language>/<kind>.toml`` (a ``[prompts]``
table of key = text). The English pool is the source: it is synced into the ``prompt`` table,
and a partner reading another language gets the prompt with the same key from that
language's file, so both partners of a couple read the same prompt, each in their own
language. Admins add their own with ``hearth prompts add`` (shown as written). Each
ritual cycles through its kind's enabled pool in a shuffled order: no prompt repeats until the
pool is used up, and a new cycle never starts with the prompt that ended the previous one.
"""

from __future__ import annotations

import random
import tomllib
from datetime import datetime
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.core.exceptions import Conflict, InvalidInput, NotFound
from service.db.models import Prompt, PromptRotation, Ritual, RitualKind
from service.domain import validation
from service.domain.events import EventType, record

POOL_DIR = Path(__file__).parent / "prompt_texts"
SOURCE = "en"  # the language the prompt table holds
MAX_LENGTH = 140  # leaves room in two SMS segments for the title, time and reply hints


@cache
def keyed_pool(kind: RitualKind, language: str = SOURCE) -> dict[str, str]:
    """The built-in prompts of ``kind`` in ``language``, by key, in file order."""
    path = POOL_DIR / language / f"{kind.value}.toml"
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return {str(k): " ".join(str(v).split()) for k, v in data.get("prompts", {}).items()}


@cache
def builtin_pool(kind: RitualKind) -> tuple[str, ...]:
    return tuple(t for t in keyed_pool(kind).values() if t)


@cache
def _keys(kind: RitualKind) -> dict[str, str]:
    return {text: key for key, text in keyed_pool(kind).items()}


def localized(kind: RitualKind, text: str, language: str) -> str:
    """A stored prompt in ``language``: the built-in one with the same key, else as stored
    (an admin's own prompt, or a built-in the language has not got)."""
    if language == SOURCE:
        return text
    key = _keys(kind).get(text)
    if key is None:
        return text
    return keyed_pool(kind, language).get(key) or text


def sync_builtin(session: Session, now: datetime) -> int:
    """Insert built-in prompts missing from the table; returns how many were added."""
    existing = {(k, t) for k, t in session.execute(sa.select(Prompt.kind, Prompt.text))}
    added = 0
    for kind in RitualKind:
        for text in builtin_pool(kind):
            if (kind, text) not in existing:
                session.add(
                    Prompt(kind=kind, text=text, builtin=True, enabled=True, created_at=now)
                )
                added += 1
    session.flush()
    return added


def enabled_ids(session: Session, kind: RitualKind) -> list[int]:
    stmt = sa.select(Prompt.id).where(Prompt.kind == kind, Prompt.enabled).order_by(Prompt.id)
    return list(session.scalars(stmt))


def next_prompt(
    session: Session,
    ritual: Ritual,
    now: datetime,
    rng: random.Random | None = None,
    pool: list[int] | None = None,
    rotation: PromptRotation | None = None,
) -> Prompt | None:
    """Take the ritual's next prompt and advance its rotation (same transaction as the send
    bookkeeping, so a rolled-back send does not consume a prompt). The dispatcher passes the
    kind's enabled ids and the ritual's rotation row, loaded once for a whole batch."""
    pool = pool if pool is not None else enabled_ids(session, ritual.kind)
    if not pool:
        sync_builtin(session, now)
        pool = enabled_ids(session, ritual.kind)
        if not pool:
            return None
    rng = rng or random.Random()
    rot = rotation or session.get(PromptRotation, ritual.id)
    if rot is None:
        rot = PromptRotation(ritual_id=ritual.id, remaining=[], last_prompt_id=None, updated_at=now)
        session.add(rot)
    valid = set(pool)
    remaining = [pid for pid in rot.remaining if pid in valid]
    if not remaining:
        remaining = pool[:]
        rng.shuffle(remaining)
        if len(remaining) > 1 and remaining[0] == rot.last_prompt_id:
            remaining.append(remaining.pop(0))
    chosen = remaining.pop(0)
    rot.remaining = remaining
    rot.last_prompt_id = chosen
    rot.updated_at = now
    return session.get(Prompt, chosen)


def list_(session: Session, kind: RitualKind | None = None) -> list[Prompt]:
    stmt = sa.select(Prompt).order_by(Prompt.kind, Prompt.id)
    if kind is not None:
        stmt = stmt.where(Prompt.kind == kind)
    return list(session.scalars(stmt))


def add(session: Session, now: datetime, kind: RitualKind, text: str) -> Prompt:
    if validation.controls(text):  # refused like in a title: an SMS and email carry it
        raise InvalidInput("prompt", "must not contain control characters")
    text = " ".join(text.split())
    if not 3 <= len(text) <= MAX_LENGTH:
        raise InvalidInput("prompt", f"must be 3 to {MAX_LENGTH} characters (SMS space)")
    if session.scalar(sa.select(Prompt).where(Prompt.kind == kind, Prompt.text == text)):
        raise Conflict(f"prompt: the {kind.value} pool already has that prompt")
    prompt = Prompt(kind=kind, text=text, builtin=False, enabled=True, created_at=now)
    session.add(prompt)
    session.flush()
    record(session, EventType.PROMPT_ADDED, now, None, prompt_id=prompt.id, kind=kind.value)
    return prompt


def set_enabled(session: Session, now: datetime, prompt_id: int, enabled: bool) -> Prompt:
    prompt = session.get(Prompt, prompt_id)
    if prompt is None:
        raise NotFound("prompt", prompt_id)
    if prompt.enabled == enabled:
        raise Conflict(f"prompt {prompt_id} is already {'enabled' if enabled else 'disabled'}")
    if not enabled and len(enabled_ids(session, prompt.kind)) <= 1:
        raise Conflict(f"prompt {prompt_id} is the last enabled {prompt.kind.value} prompt")
    prompt.enabled = enabled
    kind = EventType.PROMPT_ENABLED if enabled else EventType.PROMPT_DISABLED
    record(session, kind, now, None, prompt_id=prompt.id)
    return prompt
