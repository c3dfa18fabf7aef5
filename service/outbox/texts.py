"""What partners read: the text of each reminder, per channel.

Every text is in the partner's language (service/core/i18n.py), with times and dates in
their locale's formats and their own zone. SMS texts fit in two segments (GSM-7: 306
characters; anything outside GSM-7 switches the whole message to UCS-2: 134) and are
discreet by default: a lock screen never shows "repair" or "conflict" unless the partner chose
full text. Emails carry a text and an HTML part and the one-click unsubscribe headers
(RFC 8058).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from service.channels.base import Message
from service.channels.segments import MAX_SEGMENTS, gsm_only, segments
from service.core.i18n import N_, Lang, lang
from service.core.timeutil import zone
from service.db.models import Channel, Partner, ReminderPurpose, Ritual
from service.domain import prompts, wording
from service.domain.answers import asks, by_text

# The source texts; sms_hints() gives them in a partner's language.
SMS_HINTS = N_("Reply DONE, SKIP, SNOOZE or HELP. STOP to opt out.")
# The shared question (service/replies/question.py): the prompt is asked, answers revealed.
ASK_HINTS = N_(
    "Reply with your answer: you'll see your partner's once you both have. STOP to opt out."
)
# A discreet partner's lock screen shows no question: the text links to their page.
PAGE_ASK = N_("A question for you two is on your page: {link} STOP to opt out.")
EMAIL_ASK = N_(
    "Answer by text message: your partner sees your answer once you have both answered, "
    "and you see theirs."
)
# A partner who takes no texts answers on their page (the button below).
EMAIL_PAGE_ASK = N_(
    "Answer on your page: your partner sees your answer once you have both answered, "
    "and you see theirs."
)
# With a reply mailbox (service/replies/mailbox.py): the email itself can be answered.
EMAIL_REPLY_ASK = N_(
    "Reply to this email with your answer: your partner sees it once you have both "
    "answered, and you see theirs."
)
EMAIL_REPLY_HINTS = N_("Reply to this email with DONE, SKIP, SNOOZE 30, PAUSE 3D or STOP.")
ANSWER_BUTTON = N_("Answer on your page")


def fit(text: str, max_segments: int = MAX_SEGMENTS) -> str:
    """Shorten ``text`` at a word boundary (with an ellipsis) until it fits."""
    if segments(text) <= max_segments:
        return text
    words = text.split(" ")
    while words and segments(" ".join(words) + "...") > max_segments:
        words.pop()
    return " ".join(words) + "..."


def _shorter(title: str) -> Iterator[str]:
    """Ever shorter forms of ``title``: whole words first, then (one long word left) its
    characters, each with an ellipsis; then the same without characters outside GSM-7, whose
    presence alone halves what a segment holds."""
    for text in (title, gsm_only(title)):
        words = text.split()
        for n in range(len(words) - 1, 0, -1):
            yield " ".join(words[:n]).rstrip(",.;:-") + "..."
        first = words[0] if words else ""
        for k in range(len(first) - 1, 0, -1):
            if _joins(first[k - 1], first[k]):
                continue  # never half of a joined emoji (👩‍❤️‍👨) or a modified one
            yield first[:k] + "..."


def _joins(before: str, after: str) -> bool:
    """Whether a cut between these two characters would split one visible symbol."""
    return (
        before == "\u200d"  # zero-width joiner
        or after in "\u200d\ufe0f\ufe0e"  # joiner, emoji/text presentation selectors
        or "\U0001f3fb" <= after <= "\U0001f3ff"  # skin tone modifiers
        or "\u0300" <= after <= "\u036f"  # combining accents
    )


def fit_title(build: Callable[[str], str], title: str, max_segments: int = MAX_SEGMENTS) -> str:
    """``build(title)``, the title shortened until the text fits: what the template puts
    around it (the time, the reply hints, STOP) is never cut."""
    text = build(title)
    if segments(text) <= max_segments:
        return text
    for shorter in _shorter(title):
        text = build(shorter)
        if segments(text) <= max_segments:
            return text
    return fit(build(""), max_segments)  # only when the template alone is too long


@dataclass(frozen=True)
class Context:
    ritual: Ritual
    partner: Partner
    purpose: ReminderPurpose
    # When the occurrence really starts: a moved occurrence's new time, not its original
    # start (which only keys the reminder row).
    occurrence_start: datetime
    # The prompt as stored (the source language); shown in the partner's language.
    prompt: str | None
    unsubscribe_url: str | None = None
    # When the text goes out, if much later than planned (quiet hours, an outage): the time is
    # then told from now ("in 10 min", "started at 21:00") rather than as a stale "at 21:00".
    late_at: datetime | None = None
    # The email footer's link to the partner's page: a single-use grant (domain/grants).
    page_url: str | None = None
    # The partner's own reply address (service/domain/reply_address.py): replying works.
    reply_to: str | None = None

    @property
    def t(self) -> Lang:
        return lang(self.partner.language)

    @property
    def local_start(self) -> datetime:
        return self.occurrence_start.astimezone(zone(self.partner.timezone))

    @property
    def prompt_text(self) -> str | None:
        if self.prompt is None:
            return None
        return prompts.localized(self.ritual.kind, self.prompt, self.t.code)


# What a discreet partner's lock screen shows of any ritual: no title, prompt or feeling.
DISCREET_TITLE = N_("a moment for you two")


def _title(ctx: Context, discreet: bool) -> str:
    return ctx.t._(DISCREET_TITLE) if discreet else wording.title(ctx.ritual, ctx.t)


def _when(ctx: Context) -> str:
    t, local = ctx.t, ctx.local_start
    if ctx.ritual.start_time is None:
        return t._("today ({day})").format(day=t.day(local))
    if ctx.purpose is ReminderPurpose.INVITE:
        return t.day_time(local)
    if ctx.late_at is not None:
        ahead = ctx.occurrence_start - ctx.late_at
        if ahead <= timedelta(0):
            return t._("started at {time}").format(time=t.time(local))
        if ahead < timedelta(hours=1):
            minutes = max(1, round(ahead.total_seconds() / 60))
            return t._("in {minutes} min").format(minutes=t.number(minutes))
    return t._("at {time}").format(time=t.time(local))


def _day(ctx: Context) -> str:
    """The weekday of the talk on the partner's calendar (a follow-up may be deferred past
    "tomorrow" by quiet hours, so never "yesterday")."""
    return ctx.t.weekday(ctx.local_start)


def sms_hints(t: Lang) -> str:
    return t._(SMS_HINTS)


def sms_text(ctx: Context) -> str:
    t = ctx.t
    discreet = not ctx.partner.full_text
    title = _title(ctx, discreet)
    if ctx.purpose is ReminderPurpose.FOLLOWUP:
        ask = (
            t._(
                "Hearth: a quick question about {day}. Did the steps you agreed on happen? "
                "Reply YES, NO or a few words."
            )
            if discreet
            else t._(
                "Hearth: about your talk on {day}. Did the steps you agreed on happen? "
                "Reply YES, NO or a few words."
            )
        )
        return fit(ask.format(day=_day(ctx)))
    if ctx.purpose is ReminderPurpose.CHASE:
        chase = t._(
            "Hearth: your partner marked {day}'s {title} done. "
            "Did it happen for you too? Reply DONE. STOP to opt out."
        )
        day = _day(ctx)
        title = t._("moment") if discreet else title
        return fit_title(lambda x: chase.format(title=x, day=day), title)
    when = _when(ctx)
    if ctx.purpose is ReminderPurpose.INVITE:
        if discreet:
            how = t._(
                "Take turns, listen fully, agree on one small step. Details in your calendar."
            )
        else:
            how = t._(
                'Each speaks without interruption ("I feel... when... because..."), the other '
                "mirrors back; validate before solving; agree on one or two steps."
            )
        invite = t._("Hearth: {title} is set for {when}. {guide} Reply SKIP to call it off.")
        return fit_title(lambda x: invite.format(title=x, when=when, guide=how), title)
    # The full text, prompt and shared question included, is for partners who chose it.
    prompt = ctx.prompt_text if ctx.prompt and not discreet else None
    head = t._("Hearth: {title} {when}.")
    if discreet and ctx.page_url:
        ask = t._(PAGE_ASK).format(link=ctx.page_url)
        return fit_title(lambda x: f"{head.format(title=x, when=when)} {ask}", title)
    tail = t._(ASK_HINTS) if prompt and asks(ctx.ritual) else sms_hints(t)
    if prompt:
        # The prompt is what gets shortened, never the hints (STOP must always be there).
        start = head.format(title=title, when=when)
        words = prompt.split(" ")
        while words and segments(f"{start} {' '.join(words)} {tail}") > MAX_SEGMENTS:
            words = words[:-1]
            if words:
                words[-1] = words[-1].rstrip(",.;:") + "..."
        if words:
            return f"{start} {' '.join(words)} {tail}"
    # No room for the prompt: a title too long for the rest is what gets shortened.
    return fit_title(lambda x: f"{head.format(title=x, when=when)} {tail}", title)


def email_message(ctx: Context, to: str, reminder_id: int | None) -> Message:
    t = ctx.t
    title = _title(ctx, discreet=False)  # email is not a lock screen
    when = _when(ctx)
    if ctx.purpose is ReminderPurpose.FOLLOWUP:
        subject = t._("About your conversation on {day}").format(day=_day(ctx))
        lines = [
            t._("Did the steps you agreed on happen? Reply by SMS with YES, NO or a few words."),
            "",
        ]
    elif ctx.purpose is ReminderPurpose.INVITE:
        subject = f"{title}: {when}"
        lines = [
            t._("A calm time for your conversation: {when}. It is in your calendar.").format(
                when=when
            ),
            "",
        ]
    else:
        subject = f"{title} {when}"
        lines = [f"{title} {when}.", ""]
    prompt = ctx.prompt_text
    nudge = ctx.purpose in (ReminderPurpose.NUDGE, ReminderPurpose.SNOOZE)
    asking = bool(prompt) and asks(ctx.ritual) and nudge
    page = ctx.page_url
    button = button_line = ""
    if prompt:
        lines += [prompt, ""]
        if asking:
            if ctx.reply_to:
                ask = EMAIL_REPLY_ASK
            else:
                ask = EMAIL_ASK if by_text(ctx.partner) else EMAIL_PAGE_ASK
            lines += [t._(ask), ""]
            if page:
                # The button answers on the page (its answer box); the text part says where.
                button_line = f"{t._(ANSWER_BUTTON)}: {page}"
                lines += [button_line, ""]
                button = (
                    f'<p><a href="{html.escape(page)}" style="display:inline-block;'
                    "padding:10px 18px;border-radius:6px;background:#b4532a;color:#fff;"
                    f'text-decoration:none;font-weight:bold">{html.escape(t._(ANSWER_BUTTON))}'
                    "</a></p>"
                )
    if ctx.reply_to and nudge and not asking:
        lines += [t._(EMAIL_REPLY_HINTS), ""]
    description = wording.description(ctx.ritual, t)
    if description:
        lines += [description, ""]
    headers: dict[str, str] = {}
    if ctx.reply_to:
        headers["Reply-To"] = ctx.reply_to
    paragraphs = "".join(
        button if line == button_line else f"<p>{html.escape(line)}</p>" for line in lines if line
    )
    foot = ""
    if ctx.unsubscribe_url:
        stop = t._("Stop these emails")
        own = t._("Your own page (pause, quiet hours, calendar)")
        page = ctx.page_url
        lines += ["", *([f"{own}: {page}"] if page else []), f"{stop}: {ctx.unsubscribe_url}"]
        headers["List-Unsubscribe"] = f"<{ctx.unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        own_link = f'<a href="{html.escape(page)}">{html.escape(own)}</a> · ' if page else ""
        foot = (
            f'<p style="color:#777;font-size:small">{own_link}'
            f'<a href="{html.escape(ctx.unsubscribe_url)}">{html.escape(stop)}</a></p>'
        )
    text = "\n".join(lines).strip() + "\n"
    return Message(
        to=to,
        text=text,
        subject=subject,
        html=(f'<!doctype html><html lang="{t.code}"><body>{paragraphs}{foot}</body></html>'),
        headers=headers,
        reminder_id=reminder_id,
    )


def notice(
    text: str,
    channel: Channel,
    to: str,
    reminder_id: int | None,
    language: str | None = None,
    reply_to: str | None = None,
) -> Message:
    """A stored one-off text (no ritual behind it), written in the partner's language when it
    was queued; only the email's subject (and Reply-To) is added here."""
    if channel is Channel.SMS:
        return Message(to=to, text=fit(text), reminder_id=reminder_id)
    t = lang(language)
    return Message(
        headers={"Reply-To": reply_to} if reply_to else {},
        to=to,
        text=text + "\n",
        subject=t._("A note from Hearth"),
        html=(
            f'<!doctype html><html lang="{t.code}"><body><p>{html.escape(text)}</p></body></html>'
        ),
        reminder_id=reminder_id,
    )


def render(ctx: Context, channel: Channel, to: str, reminder_id: int | None) -> Message:
    if channel is Channel.SMS:
        return Message(to=to, text=sms_text(ctx), reminder_id=reminder_id)
    return email_message(ctx, to, reminder_id)
