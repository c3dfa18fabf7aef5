"""Hearth's own words inside a repair ritual: its title and the conversation guide.

The repair flow stores them on the ritual in English (the source language); wherever a
partner reads them (texts, the feed) they are shown in that partner's language, as long as
nobody replaced them with words of their own.
"""

from __future__ import annotations

from service.core.i18n import N_, Lang
from service.db.models import Ritual, RitualKind

REPAIR_TITLE = N_("Repair conversation")
GUIDE = N_(
    "How to talk it through:\n"
    '1. Each of you speaks without interruption, using "I feel ... when ... because ...".\n'
    "2. The listener mirrors back what they heard before answering.\n"
    "3. Validate the feeling before solving anything.\n"
    "4. Apologise sincerely where it fits.\n"
    "5. Agree on one or two concrete steps.\n\n"
    "Hearth is not therapy. Where there is a history of abuse, trauma or repeated betrayal, "
    "a couples therapist is the right next step."
)


def title(ritual: Ritual, t: Lang) -> str:
    if ritual.kind is RitualKind.REPAIR and ritual.title == REPAIR_TITLE:
        return t._(REPAIR_TITLE)
    return ritual.title


def description(ritual: Ritual, t: Lang) -> str | None:
    if ritual.kind is RitualKind.REPAIR and ritual.description == GUIDE:
        return t._(GUIDE)
    return ritual.description
