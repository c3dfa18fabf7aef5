"""Message texts: what must survive shortening (the time, the reply hints, STOP)."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from service.db.models import Partner, ReminderPurpose, Ritual, RitualKind
from service.outbox import texts
from tests.peers.twilio_standin import num_segments

# 120 characters, emoji in it: outside GSM-7, so two segments hold only 134 UTF-16 units.
LONG_TITLE = ("Our Sunday 🌞 walk-and-talk by the river, phones away, " * 3)[:119] + "💞"
START = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)  # 21:00 in Berlin


def _ctx(title: str, purpose: ReminderPurpose, prompt: str | None = None) -> texts.Context:
    ritual = Ritual(title=title, kind=RitualKind.CUSTOM, start_time=time(21, 0))
    partner = Partner(timezone="Europe/Berlin", full_text=True)
    return texts.Context(ritual, partner, purpose, START, prompt)


def test_the_long_title_is_what_it_says() -> None:
    assert len(LONG_TITLE) == 120 and texts.segments(LONG_TITLE) == 2


@pytest.mark.parametrize("prompt", [None, "What made you smile today?"])
def test_a_long_title_is_shortened_never_the_time_or_the_hints(prompt: str | None) -> None:
    text = texts.sms_text(_ctx(LONG_TITLE, ReminderPurpose.NUDGE, prompt))
    assert texts.segments(text) <= 2 and num_segments(text) <= 2  # ours and the stand-in's
    assert text.endswith(f" at 9:00 PM. {texts.SMS_HINTS}")
    title = text.removeprefix("Hearth: ").removesuffix(f" at 9:00 PM. {texts.SMS_HINTS}")
    assert title.endswith("...") and LONG_TITLE.startswith(title.removesuffix("..."))
    assert len(title) > 40  # shortened, not dropped


def test_an_invitation_keeps_its_time_and_how_to_call_it_off() -> None:
    text = texts.sms_text(_ctx(LONG_TITLE, ReminderPurpose.INVITE))
    assert texts.segments(text) <= 2
    assert "is set for Mon, Jan 5, 9:00 PM." in text and text.endswith("Reply SKIP to call it off.")


def test_a_chase_keeps_how_to_answer_and_stop() -> None:
    text = texts.sms_text(_ctx(LONG_TITLE, ReminderPurpose.CHASE))
    assert texts.segments(text) <= 2
    assert text.startswith("Hearth: your partner marked Monday's ")
    assert text.endswith(" done. Did it happen for you too? Reply DONE. STOP to opt out.")


def test_a_title_made_only_of_joined_emoji_is_cut_between_them() -> None:
    couple = "👩\u200d❤️\u200d👨"
    text = texts.sms_text(_ctx(couple * 20, ReminderPurpose.NUDGE))
    title = text.removeprefix("Hearth: ").split(" at 9:00 PM.")[0].removesuffix("...")
    assert title and title == couple * (len(title) // len(couple))
    assert text.endswith(texts.SMS_HINTS)


def test_braces_in_a_title_are_just_text() -> None:
    text = texts.sms_text(_ctx("Date {night}", ReminderPurpose.NUDGE, "Plan {it} together."))
    assert text.startswith("Hearth: Date {night} at 9:00 PM. Plan {it} together.")
