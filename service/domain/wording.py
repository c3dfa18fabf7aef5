"""Hearth's own words stored on a ritual: a template's title and description, the repair
talk's title and conversation guide.

They are stored in English (the source language); wherever a partner reads them (texts, the
feed) they are shown in that partner's language, as long as the couple has not replaced them
with words of their own.
"""

from __future__ import annotations

from service.core.i18n import N_, Lang
from service.db.models import Ritual, RitualKind
from service.domain.templates import TEMPLATES

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


def _ours(ritual: Ritual, field: str) -> set[str]:
    """The texts of ``field`` that Hearth wrote for this ritual."""
    tpl = TEMPLATES.get(ritual.template or "")
    ours = {getattr(tpl, field)} if tpl is not None else set()
    if ritual.kind is RitualKind.REPAIR:
        ours.add(REPAIR_TITLE if field == "title" else GUIDE)
    return ours


def title(ritual: Ritual, t: Lang) -> str:
    return t._(ritual.title) if ritual.title in _ours(ritual, "title") else ritual.title


def description(ritual: Ritual, t: Lang) -> str | None:
    text = ritual.description
    return t._(text) if text and text in _ours(ritual, "description") else text
