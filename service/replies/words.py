"""Reading a reply: case and accents ignored, the first word as the keyword (in the partner's
language or English), a mood number, and the keyword a short reply most likely meant
("DOEN" -> DONE, "FERTIK" -> FERTIG)."""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

_WORD = re.compile(r"[A-Z]+")
# "4", "4!", "3/5 ok", "2, tired"; not "45 min", "1.5 hours" or "2,5".
_MOOD = re.compile(
    r"^\s*([1-5])(?:\s*/\s*5)?(?![.,]\d)(?=$|[\s.,!;:)-])[\s.,!;:)-]*(?P<rest>.*)$", re.S
)
# German umlauts are spelled out (ä is AE, as a German types it without them); every other
# accent is dropped (é is E, ñ is N).
_SPELL = str.maketrans({"Ä": "AE", "Ö": "OE", "Ü": "UE", "ß": "SS", "ẞ": "SS"})


@dataclass(frozen=True)
class Parsed:
    keyword: str | None  # what the recognised first word means ("FERTIG" is DONE)
    argument: str | None  # what follows it, e.g. the minutes of SNOOZE
    word: str | None = field(default=None, compare=False)  # the first word as typed, folded


def fold(text: str) -> str:
    """Upper case, umlauts spelled out, other accents dropped: ``später`` is ``SPAETER``,
    ``pausé`` is ``PAUSE``, ``sí`` is ``SI``."""
    spelled = unicodedata.normalize("NFC", text.upper()).translate(_SPELL)
    return "".join(
        c for c in unicodedata.normalize("NFKD", spelled) if not unicodedata.combining(c)
    )


def bare(text: str) -> str:
    """Upper case with every accent dropped (``später`` is ``SPATER``): how a word typed on a
    keyboard without umlauts reads."""
    decomposed = unicodedata.normalize("NFKD", text.upper())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).replace("ß", "SS")


def parse(body: str, known: Mapping[str, str], with_argument: Collection[str]) -> Parsed:
    """The keyword a reply is: its first word if ``known`` (folded word -> what it means)
    and, unless that keyword takes an argument, nothing but punctuation after it ("stop by
    later" is a sentence)."""
    text = fold(body.strip())
    found = _WORD.findall(text)
    if not found or found[0] not in known:
        return Parsed(None, None)
    first = found[0]
    keyword = known[first]
    rest = text[text.find(first) + len(first) :].strip(" .!?,;:-¡¿")
    if keyword not in with_argument and _WORD.search(rest):
        return Parsed(None, None)
    return Parsed(keyword, rest or None, first)


def mood(body: str) -> tuple[int | None, str]:
    """A mood 1-5 as the reply or its first word ("4 long day but good"): (mood, the rest)."""
    m = _MOOD.match(body)
    if m is None:
        return None, body.strip()
    return int(m.group(1)), m.group("rest").strip()


def typo(body: str, known: Mapping[str, str]) -> str | None:
    """The keyword a one-word reply that is none most likely meant, if it is close; ``known``
    maps each folded word to how it is shown (``SPAETER`` -> ``SPÄTER``)."""
    found = _WORD.findall(fold(body))
    if len(found) != 1 or len(found[0]) < 3 or len(body.strip()) > 12:
        return None
    # Short keywords (NO, YES, END) are too near too many words to guess at.
    candidates = sorted(k for k in known if len(k) >= 4)
    close = difflib.get_close_matches(found[0], candidates, n=1, cutoff=0.75)
    return known[close[0]] if close else None
