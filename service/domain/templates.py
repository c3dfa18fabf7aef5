"""Ready-made rituals (RITUALS.md): ``hearth ritual add --template NAME``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time

from service.core.i18n import N_
from service.db.models import RitualKind


@dataclass(frozen=True)
class Template:
    """A ready-made ritual. Its title and description are Hearth's words: a partner reads
    them in their own language while the couple has not changed them (domain/wording.py)."""

    name: str
    kind: RitualKind
    title: str
    description: str
    at: time | None  # None: all-day
    duration_minutes: int
    rrule: str | None  # None: on request (repair) or given by the admin (anniversary date)
    offsets: tuple[int, ...] = (0,)


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            "five-minute-check-in",
            RitualKind.CHECK_IN,
            N_("Five-minute check-in"),
            N_("Each of you shares the best part of your day and one challenge."),
            time(21, 0),
            5,
            "FREQ=DAILY",
        ),
        Template(
            "morning-coffee",
            RitualKind.CHECK_IN,
            N_("Morning coffee"),
            N_("A short screen-free moment together before the day starts."),
            time(7, 30),
            15,
            "FREQ=DAILY",
        ),
        Template(
            "evening-recap",
            RitualKind.CHECK_IN,
            N_("Evening recap"),
            N_("A brief recap of each other's day: open questions, listen more than you talk."),
            time(20, 30),
            10,
            "FREQ=DAILY",
        ),
        Template(
            "gratitude-three",
            RitualKind.GRATITUDE,
            N_("Three gratitudes"),
            N_("Each of you names three things you appreciate, ideally something the other did."),
            time(19, 0),
            5,
            "FREQ=DAILY",
        ),
        Template(
            "appreciation-note",
            RitualKind.GRATITUDE,
            N_("Appreciation note"),
            N_("A small gesture: a note, a message, making the other's coffee."),
            time(12, 0),
            5,
            "FREQ=WEEKLY;BYDAY=MO,WE,FR",
        ),
        Template(
            "weekly-deep-talk",
            RitualKind.CHECK_IN,
            N_("Weekly deep talk"),
            N_("Twenty undistracted minutes around one open question."),
            time(19, 0),
            20,
            "FREQ=WEEKLY;BYDAY=SU",
            (0, 30),
        ),
        Template(
            "date-night",
            RitualKind.DATE_NIGHT,
            N_("Date night"),
            N_("Plan or enjoy a date together; take turns choosing what to do."),
            time(19, 30),
            120,
            "FREQ=WEEKLY;BYDAY=FR",
            (0, 240),
        ),
        Template(
            "mirroring",
            RitualKind.CHECK_IN,
            N_("Mirroring"),
            N_(
                "Take turns sharing a feeling while the other reflects it back: "
                "understand, don't fix."
            ),
            time(20, 0),
            10,
            "FREQ=WEEKLY;BYDAY=WE",
        ),
        Template(
            "vulnerability",
            RitualKind.CHECK_IN,
            N_("Vulnerability moment"),
            N_("Share something personal: a worry, a memory, a small disappointment."),
            time(21, 0),
            10,
            "FREQ=WEEKLY;BYDAY=TH",
        ),
        Template(
            "future-vision",
            RitualKind.CHECK_IN,
            N_("Future vision"),
            N_("Imagine your shared future: hopes, values, and the rituals you want to keep."),
            time(10, 0),
            45,
            "FREQ=MONTHLY;BYDAY=1SA",
            (0, 1440),
        ),
        Template(
            "anniversary",
            RitualKind.CUSTOM,
            N_("Anniversary"),
            N_("Celebrate your relationship."),
            None,
            1440,
            None,  # yearly on the date given with --on (or the start date)
            (0, 10080),
        ),
        Template(
            "repair",
            RitualKind.REPAIR,
            N_("Repair conversation"),
            N_("A calm, structured conversation after a conflict."),
            None,
            45,
            None,  # on request: see `hearth repair request`
        ),
    )
}
