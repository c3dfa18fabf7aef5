"""SQLAlchemy 2 models. The database is the single source of truth (see docs/architecture.md).

Instants are stored in UTC (:class:`UTCDateTime` returns aware datetimes on every backend);
ritual times are local wall time plus an IANA zone.
"""

from __future__ import annotations

from service.db.models.base import NAME_KEY_LENGTH, Base, UTCDateTime, table
from service.db.models.couples import ConsentRecord, Couple, Partner
from service.db.models.outbox import DeliveryStat, EarlyReceipt, Reminder
from service.db.models.records import DaemonState, Event, PageGrant, Reply, ServerSecret
from service.db.models.rituals import (
    Answer,
    CheckIn,
    OccurrenceException,
    Prompt,
    PromptRotation,
    RepairRequest,
    Ritual,
)
from service.db.states import (
    Channel,
    ConsentState,
    ExceptionKind,
    ReminderPurpose,
    ReminderState,
    RepairState,
    RitualKind,
)

__all__ = [
    "NAME_KEY_LENGTH",
    "Answer",
    "Base",
    "Channel",
    "CheckIn",
    "ConsentRecord",
    "ConsentState",
    "Couple",
    "DaemonState",
    "DeliveryStat",
    "EarlyReceipt",
    "Event",
    "ExceptionKind",
    "OccurrenceException",
    "PageGrant",
    "Partner",
    "Prompt",
    "PromptRotation",
    "Reminder",
    "ReminderPurpose",
    "ReminderState",
    "RepairRequest",
    "RepairState",
    "Reply",
    "Ritual",
    "RitualKind",
    "ServerSecret",
    "UTCDateTime",
    "table",
]
