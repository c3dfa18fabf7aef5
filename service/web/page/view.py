"""What a partner's own page shows, read in one session with a fixed number of queries.

Everything is in the partner's own timezone. The view holds data and codes, never wording:
the page's texts live in its templates (service/web/templates), ready for translation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import segno
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, selectinload

from service.calendar import feed_keep, feed_tokens
from service.core import i18n
from service.core.config import WebSettings
from service.core.crypto import Keyring
from service.core.timeutil import in_quiet_hours, zone
from service.db.engine import fetch_by_digest
from service.db.models import (
    Answer,
    Channel,
    CheckIn,
    Couple,
    Partner,
    Prompt,
    RepairRequest,
    Ritual,
)
from service.db.states import RepairState
from service.domain import answers, partners, prompts, rituals, stats, wording
from service.domain.pauses import paused_then
from service.domain.recurrence import nudge_anchor, schedule_of
from service.web.page import tokens as page_tokens

UPCOMING = 3  # occurrences shown per ritual
PAST_PAGE = 5  # revealed occurrences per page of "our questions"
CHART_WEEKS = 8


@dataclass(frozen=True, slots=True)
class Nudge:
    at: datetime  # local
    channel: str
    warning: str | None  # "quiet" (held until quiet hours end) or "unreachable"


@dataclass(frozen=True, slots=True)
class Upcoming:
    start: datetime  # local
    paused: bool
    nudges: list[Nudge]


@dataclass(frozen=True, slots=True)
class RitualLine:
    id: int
    title: str
    paused: bool
    upcoming: list[Upcoming]
    streak: int
    best: int


@dataclass(frozen=True, slots=True)
class Week:
    start: date
    done: int
    counted: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    https: str
    webcal: str
    google: str
    outlook: str
    qr_svg: str


@dataclass(frozen=True, slots=True)
class Said:
    name: str
    text: str | None  # None: forgotten (or, before the reveal, not answered yet)
    mine: bool


@dataclass(frozen=True, slots=True)
class Question:
    """The open question: what it asks, this partner's answer, the others' once revealed."""

    ritual_id: int
    key: str  # the occurrence, posted back so an answer never lands on a newer one
    title: str
    text: str | None  # the question in the reader's language
    at: datetime  # local
    mine: str | None
    revealed: list[Said]  # empty until both answered


@dataclass(frozen=True, slots=True)
class Past:
    ritual_id: int
    key: str
    title: str
    text: str | None
    at: datetime  # local
    said: list[Said]  # this partner first


@dataclass(frozen=True, slots=True)
class View:
    name: str
    couple_name: str
    others: list[str]
    timezone: str
    language: str  # what the page (and every text) is in
    quiet: str  # "22:00-07:00", or "" when off
    channels: list[str]
    full_text: bool
    has_phone: bool
    has_email: bool
    sms: str  # "none" (no phone), "consented", "opted_out", "unknown"
    email: str  # "none" (no address), "subscribed", "unsubscribed"
    paused: bool
    paused_until: datetime | None  # local
    paused_through: date | None  # the last paused day, when the pause ends at local midnight
    repair_pending: bool
    rituals: list[RitualLine]
    weeks: list[Week]
    feed: Subscribe | None
    has_feed: bool  # a feed token exists, even if this page cannot show it
    unreachable: bool  # no channel of theirs can reach them
    question: Question | None = None
    past: list[Past] = field(default_factory=list)
    past_page: int = 1
    past_more: bool = False
    kept_any: bool = False  # any occurrence counted in the chart's weeks


def _stamp_statement() -> sa.Select[Any]:
    checkin = (
        sa.select(sa.func.max(CheckIn.id))
        .join(Ritual, Ritual.id == CheckIn.ritual_id)
        .where(Ritual.couple_id == Couple.id)
        .scalar_subquery()
    )
    repair = (
        sa.select(sa.func.max(RepairRequest.updated_at))
        .where(RepairRequest.couple_id == Couple.id)
        .scalar_subquery()
    )
    # An answer given, changed or revealed moves the newest answered_at; forgetting one
    # touches its writer's row and lowers the count of kept texts.
    answered = (
        sa.select(sa.func.max(Answer.answered_at))
        .where(Answer.couple_id == Couple.id)
        .scalar_subquery()
    )
    kept = (
        sa.select(sa.func.count(Answer.text)).where(Answer.couple_id == Couple.id).scalar_subquery()
    )
    return (
        sa.select(
            Partner.id,
            Partner.updated_at,
            Couple.change_stamp,
            Couple.created_at,
            checkin,
            repair,
            answered,
            kept,
        )
        .join(Couple, Couple.id == Partner.couple_id)
        .where(Partner.page_token_hash == sa.bindparam("digest"))
    )


_STAMP = _stamp_statement()


@lru_cache(maxsize=8)
def _stamp_sql(engine: Engine) -> tuple[str, bool]:
    compiled = _STAMP.compile(dialect=engine.dialect)
    return str(compiled), bool(compiled.positional)


def stamp(engine: Engine, token: str) -> tuple[object, ...] | None:
    """What a rendered page depends on besides the clock, in one query: the partner row and
    the couple's change stamp (every write from the page moves one of them), the couple's
    latest check-in (the chart, the streaks) and repair request. ``None``: no such page.

    On a pooled connection through the driver, as :func:`feed_tokens.couple_stamp` does:
    each cached page view runs this and nothing else."""
    if not page_tokens.well_formed(token):
        return None
    sql, positional = _stamp_sql(engine)
    key = page_tokens.digest(token)
    row = fetch_by_digest(engine, sql, positional, key)
    return None if row is None else tuple(row)


def load(session: Session, token: str) -> Partner | None:
    """The page's partner with the couple and both partners, in two queries."""
    if not page_tokens.well_formed(token):
        return None
    return session.scalar(
        sa.select(Partner)
        .where(Partner.page_token_hash == page_tokens.digest(token))
        .options(selectinload(Partner.couple).selectinload(Couple.partners))
    )


def build(
    session: Session,
    partner: Partner,
    now: datetime,
    web: WebSettings,
    grace: timedelta | None = None,
    keys: Keyring | None = None,
    past_page: int = 1,
) -> View:
    couple = partner.couple
    t = i18n.lang(partner.language)
    tz = zone(partner.timezone)
    active = session.scalars(
        sa.select(Ritual)
        .where(Ritual.couple_id == couple.id, Ritual.ended_at.is_(None))
        .options(selectinload(Ritual.exceptions))
        .order_by(Ritual.id)
    ).all()
    known = {r.id: k for r, k in stats.outcomes(session, couple, now, grace)}
    lines = []
    for r in active:
        current, best = stats.streaks(known.get(r.id, []))
        lines.append(
            RitualLine(
                r.id,
                wording.title(r, t),
                r.is_paused(now),
                _upcoming(r, partner, now),
                current,
                best,
            )
        )
    pending = session.scalar(
        sa.select(RepairRequest.id)
        .where(
            RepairRequest.couple_id == couple.id,
            RepairRequest.state.in_([RepairState.REQUESTED, RepairState.SCHEDULED]),
            sa.or_(RepairRequest.slot_start.is_(None), RepairRequest.slot_start > now),
        )
        .limit(1)
    )
    paused = couple.is_paused(now)
    until = couple.paused_until.astimezone(tz) if paused and couple.paused_until else None
    through = (until - timedelta(days=1)).date() if until and until.time() == time(0) else None
    feed = feed_keep.recover(partner, keys)
    weeks = _weeks(known, now, tz)
    past, more = _past(session, partner, t, keys, past_page)
    return View(
        name=partner.name,
        couple_name=couple.name,
        others=[p.name for p in couple.partners if p.id != partner.id],
        timezone=partner.timezone,
        language=partner.language,
        quiet="" if partners.quiet(partner) is None else partners.format_quiet(partner),
        channels=[str(c) for c in partner.channel_list],
        full_text=partner.full_text,
        has_phone=bool(partner.phone),
        has_email=bool(partner.email),
        sms=_sms_state(partner),
        email="none"
        if not partner.email
        else ("unsubscribed" if partner.email_opted_out_at else "subscribed"),
        paused=paused,
        paused_until=until,
        paused_through=through,
        repair_pending=pending is not None,
        rituals=lines,
        weeks=weeks,
        feed=None if feed is None else subscribe(web, feed, couple.name),
        has_feed=partner.feed_token_hash is not None,
        unreachable=not any(_reachable(partner, c) for c in partner.channel_list),
        question=_question(session, partner, now, grace, t, keys),
        past=past,
        past_page=past_page,
        past_more=more,
        kept_any=any(w.counted for w in weeks),
    )


def _open(keys: Keyring | None, sealed: str | None) -> str | None:
    return None if sealed is None or keys is None else keys.open(sealed)


def _question(
    session: Session,
    partner: Partner,
    now: datetime,
    grace: timedelta | None,
    t: i18n.Lang,
    keys: Keyring | None,
) -> Question | None:
    """Without a key no answer can be kept, so no question is asked on the page either."""
    if keys is None or not keys.configured:
        return None
    found = answers.open_question(session, partner.couple, now, grace)
    if found is None:
        return None
    ritual, occ = found.ritual, found.occurrence
    rows = {a.partner_id: a for a in answers.for_occurrence(session, ritual.id, occ)}
    mine = rows.get(partner.id)
    revealed = []
    if mine is not None and mine.revealed_at is not None:
        revealed = [
            Said(p.name, _open(keys, rows[p.id].text), False)
            for p in partner.couple.partners
            if p.id != partner.id and p.id in rows
        ]
    prompt = session.get(Prompt, found.prompt_id) if found.prompt_id else None
    return Question(
        ritual_id=ritual.id,
        key=occ.isoformat(),
        title=wording.title(ritual, t),
        text=None if prompt is None else prompts.localized(ritual.kind, prompt.text, t.code),
        at=occ.astimezone(zone(partner.timezone)),
        mine=_open(keys, mine.text) if mine is not None else None,
        revealed=revealed,
    )


def _past(
    session: Session, partner: Partner, t: i18n.Lang, keys: Keyring | None, page: int
) -> tuple[list[Past], bool]:
    """ "Our questions": the couple's revealed occurrences, newest first, a page at a time
    (four queries whatever the page holds)."""
    if keys is None or not keys.configured:
        return [], False
    shown, more = answers.shared(session, partner.couple, page, PAST_PAGE)
    if not shown:
        return [], more
    rituals_by_id = {
        r.id: r
        for r in session.scalars(
            sa.select(Ritual).where(Ritual.id.in_({s.ritual_id for s in shown}))
        )
    }
    asked = {s.prompt_id for s in shown if s.prompt_id is not None}
    texts = (
        {q.id: q for q in session.scalars(sa.select(Prompt).where(Prompt.id.in_(asked)))}
        if asked
        else {}
    )
    names = {p.id: p.name for p in partner.couple.partners}
    tz = zone(partner.timezone)
    out = []
    for s in shown:
        ritual = rituals_by_id[s.ritual_id]
        prompt = texts.get(s.prompt_id) if s.prompt_id is not None else None
        order = sorted(s.answers, key=lambda pid: (pid != partner.id, pid))
        out.append(
            Past(
                ritual_id=ritual.id,
                key=s.occurrence.isoformat(),
                title=wording.title(ritual, t),
                text=None
                if prompt is None
                else prompts.localized(ritual.kind, prompt.text, t.code),
                at=s.occurrence.astimezone(tz),
                said=[
                    Said(names.get(pid, "?"), _open(keys, s.answers[pid]), pid == partner.id)
                    for pid in order
                ],
            )
        )
    return out, more


def _sms_state(p: Partner) -> str:
    if not p.phone:
        return "none"
    return str(p.sms_consent)


def _reachable(p: Partner, ch: Channel) -> bool:
    return partners.can_text(p) if ch is Channel.SMS else partners.can_email(p)


def _upcoming(ritual: Ritual, partner: Partner, now: datetime) -> list[Upcoming]:
    """The next occurrences, each with this partner's nudges as the planner would plan them:
    the ritual's channels (else the partner's) that are the partner's own, one nudge per
    moment by the first that can deliver it (every one for a partner who asked for both;
    service/domain/routing.py)."""
    tz = zone(partner.timezone)
    sched = schedule_of(ritual)
    wanted = [c for c in (ritual.channel_list or partner.channel_list) if c in partner.channel_list]
    reachable = [c for c in wanted if _reachable(partner, c)]
    if not partner.both_channels:
        wanted = reachable[:1] or wanted[:1]
    out = []
    for o in rituals.upcoming(ritual, now, UPCOMING):
        if paused_then(ritual, o.start):
            out.append(Upcoming(o.start.astimezone(tz), True, []))
            continue
        anchor = nudge_anchor(sched, o.start)
        nudges = []
        for offset in ritual.offsets:
            due = anchor - timedelta(minutes=offset)
            if due < now:
                continue
            quiet = in_quiet_hours(due, tz, partner.quiet_start, partner.quiet_end)
            for ch in wanted:
                warning = "quiet" if quiet else None
                if not _reachable(partner, ch):
                    warning = "unreachable"
                nudges.append(Nudge(due.astimezone(tz), str(ch), warning))
        out.append(Upcoming(o.start.astimezone(tz), False, nudges))
    return out


def _weeks(
    known: dict[int, list[tuple[datetime, bool]]], now: datetime, tz: ZoneInfo
) -> list[Week]:
    """The couple's kept/counted occurrences per week, the last CHART_WEEKS weeks."""
    out = []
    for i in range(CHART_WEEKS, 0, -1):
        lo, hi = now - timedelta(weeks=i), now - timedelta(weeks=i - 1)
        seen = [kept for k in known.values() for start, kept in k if lo <= start < hi]
        out.append(Week(lo.astimezone(tz).date(), sum(seen), len(seen)))
    return out


def subscribe(web: WebSettings, feed_token: str, calendar_name: str) -> Subscribe:
    urls = feed_tokens.urls(web, feed_token)
    return Subscribe(
        https=urls.https,
        webcal=urls.webcal,
        google="https://calendar.google.com/calendar/render?" + urlencode({"cid": urls.webcal}),
        outlook="https://outlook.live.com/calendar/0/addfromweb?"
        + urlencode({"url": urls.https, "name": calendar_name}, quote_via=quote),
        qr_svg=_qr_svg(urls.webcal),
    )


@lru_cache(maxsize=256)
def _qr_svg(text: str) -> str:
    """Encoding the QR code was half of a page view's time (bench/page.py); it changes only
    with the feed URL. The cache holds the URLs of the last pages shown, in process memory
    only, as the feed cache holds calendars."""
    qr = segno.make(text, error="m")
    return str(qr.svg_inline(scale=4, dark="#1d1d1f", light="#ffffff", omitsize=False))
