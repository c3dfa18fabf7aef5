"""The words partners text Hearth, per language.

The carrier-standard families (STOP, START, HELP) work for every partner in every language,
each word recorded as typed. Hearth's own commands have words per language; a partner's
own words and the English ones work (an English word is never taken away). Words are
written here as partners write them (the first is the one Hearth shows, e.g. in "did you
mean"); matching folds them (service/replies/words.py: umlauts as AE/OE/UE, accents dropped),
and for a word with umlauts the spelling without them (SPATER) works too.
"""

from __future__ import annotations

from functools import cache

from service.core import i18n
from service.replies.words import bare, fold

STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE", "STOPP"}
)
START_WORDS = frozenset({"START", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO", "HILFE", "AYUDA"})

KEYWORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "DONE": {"en": ("DONE",), "de": ("FERTIG", "ERLEDIGT"), "es": ("LISTO", "HECHO")},
    "SKIP": {"en": ("SKIP",), "de": ("AUSLASSEN",), "es": ("SALTAR",)},
    "SNOOZE": {"en": ("SNOOZE",), "de": ("SPÄTER",), "es": ("POSPONER", "LUEGO")},
    "REPAIR": {"en": ("REPAIR",), "de": ("REDEN",), "es": ("HABLAR",)},
    "PAUSE": {"en": ("PAUSE",), "de": ("PAUSE",), "es": ("PAUSA",)},
    "RESUME": {"en": ("RESUME",), "de": ("WEITER",), "es": ("SEGUIR",)},
    "NO": {"en": ("NO",), "de": ("NEIN",), "es": ("NO",)},
    # The opt-in's answer (and, from a subscribed partner, a word like any other).
    "YES": {"en": ("YES",), "de": ("JA",), "es": ("SÍ",)},
    "LINK": {"en": ("LINK",), "de": ("LINK", "SEITE"), "es": ("LINK", "ENLACE")},
}
TAKES_ARGUMENT = frozenset({"SNOOZE", "PAUSE"})


@cache
def known(language: str) -> dict[str, str]:
    """Every word a partner of ``language`` may start a reply with (folded), to what it
    means: a command of :data:`KEYWORDS`, or a carrier word as itself."""
    out = {w: w for w in STOP_WORDS | START_WORDS | HELP_WORDS}
    for command, by_language in KEYWORDS.items():
        for code in dict.fromkeys((i18n.DEFAULT, language)):
            for word in by_language.get(code, ()):
                out.setdefault(fold(word), command)
                out.setdefault(bare(word), command)
    return out


@cache
def shown(language: str) -> dict[str, str]:
    """Hearth's command words for ``language`` and English (folded -> as written): what a
    typo may have meant."""
    out: dict[str, str] = {}
    for by_language in KEYWORDS.values():
        for code in dict.fromkeys((language, i18n.DEFAULT)):
            for word in by_language.get(code, ()):
                out.setdefault(fold(word), word)
    return out
