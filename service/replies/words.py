"""Reading a reply: case and accents ignored, the first word as the keyword, a mood number,
and the keyword a short reply most likely meant ("DOEN" -> DONE)."""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass

_WORD = re.compile(r"[A-Z]+")
# "4", "4!", "3/5 ok", "2, tired"; not "45 min", "1.5 hours" or "2,5".
_MOOD = re.compile(
    r"^\s*([1-5])(?:\s*/\s*5)?(?![.,]\d)(?=$|[\s.,!;:)-])[\s.,!;:)-]*(?P<rest>.*)$", re.S
)


@dataclass(frozen=True)
class Parsed:
    keyword: str | None  # the recognised first word, upper case
    argument: str | None  # what follows it, e.g. the minutes of SNOOZE


def fold(text: str) -> str:
    """Upper case without accents: "pausé", "Pause" and "PAUSE" read the same."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def parse(body: str, known: Collection[str], with_argument: Collection[str]) -> Parsed:
    """The keyword a reply is: its first word if known and, unless that keyword takes an
    argument, nothing but punctuation after it ("stop by later" is a sentence)."""
    text = fold(body.strip())
    words = _WORD.findall(text)
    if not words or words[0] not in known:
        return Parsed(None, None)
    first = words[0]
    rest = text[text.find(first) + len(first) :].strip(" .!?,;:-")
    if first not in with_argument and _WORD.search(rest):
        return Parsed(None, None)
    return Parsed(first, rest or None)


def mood(body: str) -> tuple[int | None, str]:
    """A mood 1-5 as the reply or its first word ("4 long day but good"): (mood, the rest)."""
    m = _MOOD.match(body)
    if m is None:
        return None, body.strip()
    return int(m.group(1)), m.group("rest").strip()


def typo(body: str, known: Collection[str]) -> str | None:
    """The keyword a one-word reply that is none most likely meant, if it is close."""
    words = _WORD.findall(fold(body))
    if len(words) != 1 or len(words[0]) < 3 or len(body.strip()) > 12:
        return None
    # Short keywords (NO, YES, END) are too near too many words to guess at.
    candidates = sorted(k for k in known if len(k) >= 4)
    close = difflib.get_close_matches(words[0], candidates, n=1, cutoff=0.75)
    return close[0] if close else None
