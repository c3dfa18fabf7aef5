"""The languages partners read Hearth in: gettext catalogs (Babel) and CLDR formats.

Catalogs live in ``service/locale/<lang>/LC_MESSAGES/hearth.po``; ``make`` compiles them to
``.mo`` at install (``pybabel compile``). A ``.mo`` missing or older than its ``.po`` (a fresh
clone run without ``make``, an edited catalog) is compiled in memory on first use instead, so
a partner never gets a stale or missing text. English is the source language: its catalog
holds the plural forms and nothing else needs translating.

Times and dates follow the partner's locale (``21:00`` in German, ``9:00 PM`` in English) in
the zone the caller converts to. CLDR puts a narrow no-break space in "9:00 PM", which is
outside GSM-7 and would halve what an SMS segment holds, so formats use a plain space.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path

from babel import Locale
from babel.dates import format_date, format_skeleton, format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import Translations

DOMAIN = "hearth"
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
LANGUAGES: tuple[str, ...] = ("en", "de", "es")  # what Hearth ships; en is the source
DEFAULT = "en"
NAMES = {"en": "English", "de": "Deutsch", "es": "Español"}
_SPACES = str.maketrans({"\u202f": " ", "\u00a0": " "})


def N_(message: str) -> str:
    """Marks a message for extraction where it is defined; translated where it is used."""
    return message


def check(language: str) -> str:
    """``language`` normalised (``DE`` -> ``de``), or ValueError naming the shipped ones."""
    code = language.strip().lower().replace("_", "-").split("-")[0]
    if code not in LANGUAGES:
        raise ValueError(f"must be one of {', '.join(LANGUAGES)}")
    return code


def po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def translations(language: str) -> Translations:
    po = po_path(language)
    mo = po.with_suffix(".mo")
    if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
        with mo.open("rb") as f:
            return Translations(f, domain=DOMAIN)
    with po.open("rb") as f:
        catalog = read_po(f, locale=language, domain=DOMAIN)
    buf = io.BytesIO()
    write_mo(buf, catalog)  # fuzzy entries left out, as pybabel compile does
    buf.seek(0)
    return Translations(buf, domain=DOMAIN)


@dataclass(frozen=True)
class Lang:
    """One partner's language: its texts and its formats."""

    code: str

    @property
    def locale(self) -> Locale:
        return _locale(self.code)

    def _(self, message: str) -> str:
        return translations(self.code).gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return translations(self.code).ngettext(singular, plural, n)

    def time(self, at: datetime) -> str:
        """``21:00`` / ``9:00 PM`` / ``21:00``."""
        return format_time(at, "short", locale=self.locale).translate(_SPACES)

    def day(self, at: datetime) -> str:
        """``Do., 24. Dez.`` / ``Thu, Dec 24`` / ``jue, 24 dic``."""
        return format_skeleton("MMMEd", at, locale=self.locale).translate(_SPACES)

    def weekday(self, at: datetime) -> str:
        """``Donnerstag`` / ``Thursday`` / ``jueves``."""
        return format_date(at, "EEEE", locale=self.locale)

    def day_time(self, at: datetime) -> str:
        """``Do., 24. Dez., 21:00`` / ``Thu, Dec 24, 9:00 PM``: joined as CLDR joins them."""
        glue = str(self.locale.datetime_formats["short"])
        return glue.replace("{1}", self.day(at)).replace("{0}", self.time(at))

    def long_date(self, on: date) -> str:
        """``Thursday, December 24, 2026`` / ``Donnerstag, 24. Dezember 2026``."""
        return format_date(on, "full", locale=self.locale).translate(_SPACES)

    def short_date(self, on: date) -> str:
        """``Dec 24`` / ``24. Dez.`` / ``24 dic``."""
        return format_skeleton("MMMd", on, locale=self.locale).translate(_SPACES)

    def numeric_date(self, on: date) -> str:
        """``12/24`` / ``24.12.`` / ``24/12``."""
        return format_skeleton("Md", on, locale=self.locale).translate(_SPACES)

    def number(self, value: float) -> str:
        """``1,5`` / ``1.5``: the locale's decimal format."""
        return format_decimal(value, locale=self.locale).translate(_SPACES)


@cache
def _locale(code: str) -> Locale:
    return Locale.parse(code)


@cache
def lang(language: str | None) -> Lang:
    """The language for a partner's stored code; an unknown or missing one reads English."""
    try:
        return Lang(check(language or DEFAULT))
    except ValueError:
        return Lang(DEFAULT)
