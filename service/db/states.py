"""The states and kinds Hearth stores, as ``str`` enums (their values are the stored text)."""

from __future__ import annotations

from enum import StrEnum


class RitualKind(StrEnum):
    CHECK_IN = "check_in"
    GRATITUDE = "gratitude"
    REPAIR = "repair"
    DATE_NIGHT = "date_night"
    CUSTOM = "custom"


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"


class ConsentState(StrEnum):
    UNKNOWN = "unknown"
    PENDING = "pending"  # double opt-in: the confirmation went out, no YES yet
    CONSENTED = "consented"
    OPTED_OUT = "opted_out"


class ExceptionKind(StrEnum):
    SKIP = "skip"
    MOVE = "move"


class ReminderState(StrEnum):
    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    SKIPPED = "skipped"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


PENDING_STATES = (ReminderState.SCHEDULED, ReminderState.SENDING)
FINAL_STATES = (
    ReminderState.DELIVERED,
    ReminderState.UNDELIVERED,
    ReminderState.FAILED,
    ReminderState.SKIPPED,
    ReminderState.EXPIRED,
    ReminderState.CANCELLED,
)


class ReminderPurpose(StrEnum):
    NUDGE = "nudge"  # the ritual's own reminder at one of its offsets
    SNOOZE = "snooze"  # a nudge re-sent after SNOOZE
    INVITE = "invite"  # repair: the invitation with the structure
    FOLLOWUP = "followup"  # repair: next-day check
    CHASE = "chase"  # gentle nudge to the partner who has not answered DONE
    NOTICE = "notice"  # a one-off text stored with the row (e.g. no repair slot found)
    # A one-off text a partner's own reply caused (a reveal of answers, "your partner paused"):
    # its body is sealed (service/core/crypto.py); it goes out while the couple is paused.
    MESSAGE = "message"
    CONFIRM = "confirm"  # double opt-in: the one text a number may get before it says YES


ONE_OFF_PURPOSES = (ReminderPurpose.NOTICE, ReminderPurpose.MESSAGE, ReminderPurpose.CONFIRM)


class RepairState(StrEnum):
    REQUESTED = "requested"
    SCHEDULED = "scheduled"
    NO_SLOT = "no_slot"
    CANCELLED = "cancelled"
    DONE = "done"
