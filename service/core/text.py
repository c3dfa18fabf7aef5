"""Text rules shared by every layer: how names match, and how much of an input an error
message may quote back."""

from __future__ import annotations

import unicodedata

# An error message quotes at most this much of what was typed: a 10,000-character value
# must not become a 10,000-character line (on a terminal, in a log, in an HTTP answer).
ECHO_LIMIT = 60


def name_key(name: str) -> str:
    """The form two names are compared in: Unicode case folding between canonical
    normalisations, so "ÄBC", "äbc" and "a\u0308bc" are one name on SQLite and PostgreSQL
    alike (SQLite's lower() knows only ASCII). Stored in a unique column per scope."""
    folded = unicodedata.normalize("NFD", " ".join(name.split())).casefold()
    return unicodedata.normalize("NFC", folded)


def cut(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` for an error message, unquoted, cut to ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr`` of a value for an error message, cut to ``limit`` characters."""
    text = str(value)
    if len(text) > limit:
        return repr(text[: limit - 1]) + f"… ({len(text)} characters)"
    return repr(text)


# Ids are 64-bit on both databases: a longer number names no row (and must not reach a
# driver, which would overflow).
MAX_ID = 2**63 - 1


def as_id(text: str) -> int | None:
    """The id a reference spells (ASCII digits only: "²" is no id), else ``None``. An id
    beyond 64 bits is returned as 0, which no row has."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text) if len(text) < 25 else 0
    return value if value <= MAX_ID else 0
