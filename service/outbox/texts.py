"""What partners read: the text of each reminder, per channel.

SMS texts fit in two segments (GSM-7: 306 characters; anything outside GSM-7 switches the
whole message to UCS-2: 134) and are discreet by default: a lock screen never shows "repair"
or "conflict" unless the partner chose full text. Emails carry a text and an HTML part and the
one-click unsubscribe headers (RFC 8058).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from service.channels.base import Message
from service.channels.segments import MAX_SEGMENTS, gsm_only, segments
from service.core.timeutil import zone
from service.db.models import Channel, Partner, ReminderPurpose, Ritual

SMS_HINTS = "Reply DONE, SKIP, SNOOZE or HELP. STOP to opt out."


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
    prompt: str | None
    unsubscribe_url: str | None = None
    # Set when the text goes out later than planned (quiet hours, a retry): the time is then
    # told from this moment ("in 10 min", "started at 16:40"), not as planned.
    late_at: datetime | None = None


# What a discreet text calls any ritual: a lock screen shows no ritual, prompt or feeling.
DISCREET_TITLE = "a moment for you two"


def _title(ctx: Context, discreet: bool) -> str:
    return DISCREET_TITLE if discreet else ctx.ritual.title


def _when(ctx: Context) -> str:
    local = ctx.occurrence_start.astimezone(zone(ctx.partner.timezone))
    if ctx.ritual.start_time is None:
        return f"today ({local:%a %d %b})"
    if ctx.late_at is not None and ctx.purpose is not ReminderPurpose.INVITE:
        ahead = ctx.occurrence_start - ctx.late_at
        if ahead <= timedelta(0):
            return f"started at {local:%H:%M}"
        if ahead < timedelta(hours=1):
            return f"in {max(1, round(ahead.total_seconds() / 60))} min"
    return (
        f"at {local:%H:%M}"
        if ctx.purpose is not ReminderPurpose.INVITE
        else f"{local:%a %d %b %H:%M}"
    )


def _day(ctx: Context) -> str:
    """The weekday of the talk on the partner's calendar (a follow-up may be deferred past
    "tomorrow" by quiet hours, so never "yesterday")."""
    return f"{ctx.occurrence_start.astimezone(zone(ctx.partner.timezone)):%A}"


def sms_text(ctx: Context) -> str:
    discreet = not ctx.partner.full_text
    title = _title(ctx, discreet)
    if ctx.purpose is ReminderPurpose.FOLLOWUP:
        about = "a quick question about" if discreet else "about your talk on"
        return fit(
            f"Hearth: {about} {_day(ctx)}. Did the steps you agreed on happen? "
            "Reply YES, NO or a few words."
        )
    if ctx.purpose is ReminderPurpose.CHASE:
        day = _day(ctx)
        title = "moment" if discreet else title
        return fit_title(
            lambda t: (
                f"Hearth: your partner marked {day}'s {t} done. "
                "Did it happen for you too? Reply DONE. STOP to opt out."
            ),
            title,
        )
    when = _when(ctx)
    if ctx.purpose is ReminderPurpose.INVITE:
        if discreet:
            guide = "Take turns, listen fully, agree on one small step. Details in your calendar."
        else:
            guide = (
                'Each speaks without interruption ("I feel... when... because..."), the other '
                "mirrors back; validate before solving; agree on one or two steps."
            )
        return fit_title(
            lambda t: f"Hearth: {t} is set for {when}. {guide} Reply SKIP to call it off.", title
        )
    prompt = ctx.prompt if ctx.prompt and not discreet else None
    head = f"Hearth: {title} {when}."
    tail = SMS_HINTS
    if prompt:
        # The prompt is what gets shortened, never the hints (STOP must always be there).
        words = prompt.split(" ")
        while words and segments(f"{head} {' '.join(words)} {tail}") > MAX_SEGMENTS:
            words = words[:-1]
            if words:
                words[-1] = words[-1].rstrip(",.;:") + "..."
        if words:
            return f"{head} {' '.join(words)} {tail}"
    # No room for the prompt: a title too long for the rest is what gets shortened.
    return fit_title(lambda t: f"Hearth: {t} {when}. {tail}", title)


def email_message(ctx: Context, to: str, reminder_id: int | None) -> Message:
    title = _title(ctx, discreet=False)  # email is not a lock screen
    when = _when(ctx)
    if ctx.purpose is ReminderPurpose.FOLLOWUP:
        subject = f"About your conversation on {_day(ctx)}"
        lines = [
            "Did the steps you agreed on happen? Reply by SMS with YES, NO or a few words.",
            "",
        ]
    elif ctx.purpose is ReminderPurpose.INVITE:
        subject = f"{title}: {when}"
        lines = [f"A calm time for your conversation: {when}. It is in your calendar.", ""]
    else:
        subject = f"{title} {when}"
        lines = [f"{title} {when}.", ""]
    if ctx.prompt:
        lines += [ctx.prompt, ""]
    if ctx.ritual.description:
        lines += [ctx.ritual.description, ""]
    headers: dict[str, str] = {}
    if ctx.unsubscribe_url:
        lines += ["", f"Stop these emails: {ctx.unsubscribe_url}"]
        headers["List-Unsubscribe"] = f"<{ctx.unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    text = "\n".join(lines).strip() + "\n"
    paragraphs = "".join(
        f"<p>{html.escape(line)}</p>" for line in lines if line and not line.startswith("Stop ")
    )
    foot = (
        f'<p style="color:#777;font-size:small"><a href="{html.escape(ctx.unsubscribe_url)}">'
        "Stop these emails</a></p>"
        if ctx.unsubscribe_url
        else ""
    )
    return Message(
        to=to,
        text=text,
        subject=subject,
        html=f"<!doctype html><html><body>{paragraphs}{foot}</body></html>",
        headers=headers,
        reminder_id=reminder_id,
    )


def notice(text: str, channel: Channel, to: str, reminder_id: int | None) -> Message:
    """A stored one-off text (no ritual behind it)."""
    if channel is Channel.SMS:
        return Message(to=to, text=fit(text), reminder_id=reminder_id)
    return Message(
        to=to,
        text=text + "\n",
        subject="A note from Hearth",
        html=f"<!doctype html><html><body><p>{html.escape(text)}</p></body></html>",
        reminder_id=reminder_id,
    )


def render(ctx: Context, channel: Channel, to: str, reminder_id: int | None) -> Message:
    if channel is Channel.SMS:
        return Message(to=to, text=sms_text(ctx), reminder_id=reminder_id)
    return email_message(ctx, to, reminder_id)
