"""The shared question by text: answers, mood, and the reveal.

A reply that is no keyword, sent while the occurrence the partner was last nudged about is
open (from its nudge until its grace period ends: the next occurrence, or
``replies.grace_hours``), is that partner's answer, if the ritual asks
(service/domain/answers.py). The reveal rule: an answer is never shown to the other partner
unless both answered that occurrence in time; then each gets the other's, once (the
message's outbox key is unique per occurrence, partner and channel), and the answers are
final. Until then a partner may change theirs by texting again. A late answer is kept for
its writer, never revealed, and the writer is told so. Answering counts as DONE.

A reply that is, or begins with, a number 1-5 also records the partner's mood.

The text is sealed in the answer row and in the reveal message's outbox row (the dispatcher
opens it at send time), and it is never logged.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.channels.segments import MAX_SEGMENTS, segments
from service.core import i18n
from service.core.i18n import N_, Lang
from service.db.context import Hearth
from service.db.models import Answer, Channel, CheckIn, Partner, Prompt, Ritual
from service.domain import answers, grants, partners, prompts, stats, validation, wording
from service.domain.events import EventType, record
from service.replies import outgoing, words

Outcome = tuple[str | None, str, int | None]
MAX_ANSWER = 1600
MORE_EMAIL = N_("(all of it in your email)")
LATE_TEXT = N_(
    "Hearth: thank you. That came after this one closed, so it stays with you and is not "
    "shared with your partner."
)
MOOD_LATE = N_("Hearth: that one has closed; your mood was not recorded.")
MOOD_NOTED = N_("Hearth: mood {mood} noted, thank you.")
MOOD_NOTED_ASK = N_(
    "Hearth: mood {mood} noted, thank you. Reply with a few words to answer the question too."
)
AFTER_REVEAL = N_("Hearth: your answers were shared already, so this one stays with you.")
GOT_ANSWER = N_(
    "Hearth: got your answer. You'll see your partner's once they answer too; "
    "text again to change yours."
)
CHANGED_ANSWER = N_(
    "Hearth: changed your answer. You'll see your partner's once they answer too; "
    "text again to change yours."
)
REVEAL_HEAD = N_("Hearth: {name}'s answer:")
EMAIL_HEAD = N_("{name}'s answer to {title}:")
EMAIL_QUESTION = N_('The question was: "{question}"')
# To a discreet partner: no name of a ritual, no answer on the lock screen.
REVEAL_PAGE = N_("Hearth: your partner answered too. See both answers on your page: {link}")


def mark_done(
    hearth: Hearth,
    session: Session,
    now: datetime,
    partner: Partner,
    ritual: Ritual,
    occurrence: datetime,
    source: str,
) -> bool:
    """Record DONE for the partner (once) and chase the other; True if it was new."""
    exists = session.scalar(
        sa.select(CheckIn.id).where(
            CheckIn.ritual_id == ritual.id,
            CheckIn.occurrence_start == occurrence,
            CheckIn.partner_id == partner.id,
        )
    )
    if exists is not None:
        return False
    session.add(
        CheckIn(
            ritual_id=ritual.id,
            occurrence_start=occurrence,
            partner_id=partner.id,
            at=now,
            source=source,
        )
    )
    session.flush()
    record(
        session,
        EventType.OCCURRENCE_DONE,
        now,
        partner.couple_id,
        partner_id=partner.id,
        ritual_id=ritual.id,
        occurrence=occurrence.isoformat(),
    )
    outgoing.chase(hearth, session, now, partner, ritual, occurrence)
    return True


def reply(
    hearth: Hearth, session: Session, now: datetime, partner: Partner, body: str
) -> Outcome | None:
    """Act on a reply that is no keyword; None: it is no answer and no mood."""
    t = i18n.lang(partner.language)
    mood, rest = words.mood(body)
    last = outgoing.latest_sent(session, partner, *outgoing.NUDGES)
    ritual = session.get(Ritual, last.ritual_id) if last and last.ritual_id else None
    if last is None or ritual is None:
        return None
    # Without a key no answer can be kept (never in clear): only the mood counts. A discreet
    # partner was asked on their page, not in the text: their words are no answer.
    asking = answers.asks(ritual) and answers.by_text(partner) and hearth.keys.configured
    if not asking and mood is None:
        return None
    occ = last.occurrence_start
    late = now >= stats.grace_end(ritual, occ, hearth.settings.replies.grace)
    if mood is not None and (not asking or not rest):
        if late:
            return t._(MOOD_LATE), "mood: late", None
        row, _ = answers.upsert(session, now, ritual, occ, partner)
        row.mood = mood
        noted = MOOD_NOTED_ASK if asking and row.text is None else MOOD_NOTED
        return t._(noted).format(mood=mood), f"mood {mood}", ritual.id
    occ, prompt_id = last.occurrence_start, last.prompt_id
    return answer(hearth, session, now, partner, ritual, occ, prompt_id, body.strip(), mood, late)


def answer(
    hearth: Hearth,
    session: Session,
    now: datetime,
    partner: Partner,
    ritual: Ritual,
    occ: datetime,
    prompt_id: int | None,
    text: str,
    mood: int | None,
    late: bool,
) -> Outcome:
    """Keep ``partner``'s answer to the occurrence (by text or on their page) and reveal
    both once both answered in time."""
    t = i18n.lang(partner.language)
    text = validation.plain(text)  # it goes on to the other partner's SMS and email
    # Two answers arriving together: on PostgreSQL (READ COMMITTED) neither transaction
    # would see the other's uncommitted answer and nobody would get the reveal. The second
    # waits here for the first to commit, then reads its answer. (NO KEY UPDATE: the
    # dispatcher's inserts that reference the ritual need not wait; SQLite's BEGIN
    # IMMEDIATE serializes the two already.)
    session.execute(
        sa.select(Ritual.id).where(Ritual.id == ritual.id).with_for_update(key_share=True)
    )
    row, _ = answers.upsert(session, now, ritual, occ, partner)
    if row.prompt_id is None:
        row.prompt_id = prompt_id
    if row.revealed_at is not None:
        return t._(AFTER_REVEAL), "answer: after the reveal", ritual.id
    if late:
        if row.text is None or row.late:
            row.text, row.late, row.answered_at = hearth.keys.seal(text[:MAX_ANSWER]), True, now
        return t._(LATE_TEXT), "answer: late, not shared", ritual.id
    changed = row.text is not None
    row.text, row.answered_at = hearth.keys.seal(text[:MAX_ANSWER]), now
    if mood is not None:
        row.mood = mood
    session.flush()
    record(
        session,
        EventType.ANSWER_GIVEN,
        now,
        partner.couple_id,
        partner_id=partner.id,
        ritual_id=ritual.id,
        occurrence=occ.isoformat(),
    )
    mark_done(hearth, session, now, partner, ritual, occ, "answer")
    if reveal(hearth, session, now, ritual, occ, prompt_id):
        return None, "answer: revealed to both", ritual.id
    if changed:
        return t._(CHANGED_ANSWER), "answer changed", ritual.id
    return t._(GOT_ANSWER), "answer stored", ritual.id


def reveal(
    hearth: Hearth,
    session: Session,
    now: datetime,
    ritual: Ritual,
    occ: datetime,
    prompt_id: int | None,
) -> bool:
    """If every partner taking part answered in time: queue each the other's answer (SMS,
    and the whole of a long one by email) and make the answers final. True if revealed."""
    members = [p for p in ritual.couple.partners if answers.takes_part(p)]
    rows: dict[int, Answer] = {
        a.partner_id: a for a in answers.for_occurrence(session, ritual.id, occ)
    }
    if len(members) < 2 or any(
        (a := rows.get(p.id)) is None or a.text is None or a.late or a.revealed_at is not None
        for p in members
    ):
        return False
    prompt = session.get(Prompt, prompt_id) if prompt_id else None
    for to in members:
        for other in members:
            if other is not to:
                _reveal_to(hearth, session, now, ritual, occ, prompt, to, other, rows)
    for a in rows.values():
        a.revealed_at = now
    record(
        session,
        EventType.ANSWERS_REVEALED,
        now,
        ritual.couple_id,
        ritual_id=ritual.id,
        occurrence=occ.isoformat(),
    )
    return True


def _reveal_to(
    hearth: Hearth,
    session: Session,
    now: datetime,
    ritual: Ritual,
    occ: datetime,
    prompt: Prompt | None,
    to: Partner,
    other: Partner,
    rows: dict[int, Answer],
) -> None:
    """``other``'s answer to ``to`` on their own channel: in the text for a full-text SMS
    partner (the whole of a long one by email too), by email (not a lock screen) for a
    partner who gets emails, else a discreet text that only points to their page. Their
    page shows it in any case."""
    text = hearth.keys.open(rows[other.id].text or "")
    t = i18n.lang(to.language)  # the reader's language; the answer as written
    fresh = outgoing.REVEAL_FRESH
    email = partners.can_email(to) and Channel.EMAIL in to.channel_list
    # Their channels are an order of preference: email first means the reveal goes by email.
    if answers.by_text(to) and not (email and to.channel_list[0] is Channel.EMAIL):
        sms, cut = reveal_sms(other.name, text, t, more=partners.can_email(to))
        outgoing.message(
            hearth,
            session,
            now,
            to,
            sms,
            ritual_id=ritual.id,
            occurrence=occ,
            fresh=fresh,
            words=True,
        )
        if not (cut and partners.can_email(to)):
            return
    elif not email:
        notice = t._(REVEAL_PAGE).format(link=grants.PAGE_LINK)
        outgoing.message(
            hearth, session, now, to, notice, ritual_id=ritual.id, occurrence=occ, fresh=fresh
        )
        return
    head = t._(EMAIL_HEAD).format(name=other.name, title=wording.title(ritual, t))
    asked = ""
    if prompt is not None:
        question = prompts.localized(ritual.kind, prompt.text, t.code)
        asked = t._(EMAIL_QUESTION).format(question=question) + "\n\n"
    outgoing.message(
        hearth,
        session,
        now,
        to,
        f"{head}\n\n{asked}{text}",
        channel=Channel.EMAIL,
        ritual_id=ritual.id,
        occurrence=occ,
        fresh=fresh,
        words=True,
    )


def reveal_sms(name: str, text: str, t: Lang, more: bool = False) -> tuple[str, bool]:
    """The partner's answer in at most two segments; (text, whether it was cut). A cut one
    ends in an ellipsis and, with ``more``, where the rest is (the email)."""
    head = t._(REVEAL_HEAD).format(name=name) + " "
    more_text = " " + t._(MORE_EMAIL) if more else ""
    whole = head + text
    if segments(whole) <= MAX_SEGMENTS:
        return whole, False
    kept = text.split(" ")
    while kept and segments(head + " ".join(kept) + "..." + more_text) > MAX_SEGMENTS:
        kept.pop()
    if not kept:  # one very long word: cut characters
        cut = text
        while cut and segments(head + cut + "..." + more_text) > MAX_SEGMENTS:
            cut = cut[:-1]
        return head + cut + "..." + more_text, True
    return head + " ".join(kept) + "..." + more_text, True
