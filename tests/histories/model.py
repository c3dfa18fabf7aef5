"""What a history did, in order: the people and rituals it made, what they texted or clicked,
the faults it injected, and every message a provider accepted (stamped with the fake time
of the pass that sent it).

Every record carries ``seq``, a counter shared by all of them: "after the STOP was answered"
is ``stop.seq < message.seq``, which holds even when both happened at the same fake instant.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, time


@dataclass(frozen=True)
class Seen:
    """One message a provider accepted: channel, recipient, body, the id the provider gave it
    (Twilio's sid, the email's Message-ID), and when (fake time) and in which order."""

    channel: str
    to: str
    body: str
    provider_id: str
    at: datetime
    seq: int


@dataclass
class Span:
    """An interval of the history in ``seq`` order (an end of None: still on)."""

    start_seq: int
    start_at: datetime
    end_seq: int | None = None
    until: datetime | None = None  # the pause's own end, in fake time
    by: int | None = None  # the partner who paused

    def covers(self, seq: int, at: datetime) -> bool:
        """Whether it is on for something seen at ``seq`` about the instant ``at`` (a message
        about an occurrence that began before a pause is not one in the pause)."""
        if seq <= self.start_seq or (self.end_seq is not None and seq > self.end_seq):
            return False
        if at < self.start_at:
            return False
        return self.until is None or at < self.until


@dataclass
class PartnerModel:
    id: int
    couple_id: int
    name: str
    phone: str
    email: str | None
    timezone: str
    page_token: str
    # (seq, quiet hours or None) in order: the setting in force at each point of the history.
    quiet: list[tuple[int, tuple[time, time] | None]] = field(default_factory=list)
    stops: list[Span] = field(default_factory=list)
    answers: list[tuple[int, datetime, str]] = field(default_factory=list)

    def quiet_at(self, seq: int) -> tuple[time, time] | None:
        current = None
        for at, value in self.quiet:
            if at < seq:
                current = value
        return current

    def stopped_at(self, seq: int, at: datetime) -> bool:
        return any(s.covers(seq, at) for s in self.stops)


@dataclass
class RitualModel:
    id: int
    couple_id: int
    timezone: str
    # (seq, fake time, local start time): every time of day the ritual had, in order.
    times: list[tuple[int, datetime, time]] = field(default_factory=list)
    # [seq, occurrence start, seq cleared or None]: occurrences skipped, and when; an edit of
    # the time clears them (the skips named instants of the old schedule).
    skips: list[tuple[int, datetime, int | None]] = field(default_factory=list)

    def skipped_at(self, seq: int, occurrence: datetime) -> bool:
        return any(
            at < seq and occ == occurrence and (end is None or seq < end)
            for at, occ, end in self.skips
        )

    def time_at(self, seq: int) -> tuple[int, datetime, time]:
        return [t for t in self.times if t[0] < seq][-1]


@dataclass
class CoupleModel:
    id: int
    timezone: str
    partners: list[PartnerModel] = field(default_factory=list)
    rituals: list[RitualModel] = field(default_factory=list)
    pauses: list[Span] = field(default_factory=list)
    asks: bool = False  # both chose full texts: check-ins ask the shared question

    def paused_at(self, seq: int, at: datetime) -> bool:
        return any(p.covers(seq, at) for p in self.pauses)


@dataclass
class History:
    couples: list[CoupleModel] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    # Faults the history injected that may leave a send's outcome unknown to Hearth:
    # (seq, kind), kind one of "accept-then-drop", "accept-then-timeout", "killed-after-send".
    unknown_faults: list[tuple[int, str]] = field(default_factory=list)
    http_errors: list[str] = field(default_factory=list)
    # When the provider was told to refuse the next text for good (a reveal among them is
    # then undeliverable with a reason, not owed).
    refusals: list[datetime] = field(default_factory=list)
    # Texts the provider itself reported undelivered (a status callback): Hearth may send
    # those again, and they never reached anyone to be counted twice.
    undelivered: set[str] = field(default_factory=set)
    # (partner id, partner id, fake time, the answers' step): both answered at once and each
    # was told "got your answer": each is owed the other's. The step, not the time, names
    # the answers: a second round at the same moment (after the reveal) is not owed.
    together: list[tuple[int, int, datetime, int]] = field(default_factory=list)
    steps: int = 0
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_seq(self) -> int:
        return next(self._seq)

    @property
    def partners(self) -> list[PartnerModel]:
        return [p for c in self.couples for p in c.partners]

    @property
    def rituals(self) -> list[RitualModel]:
        return [r for c in self.couples for r in c.rituals]

    def couple(self, couple_id: int) -> CoupleModel:
        return next(c for c in self.couples if c.id == couple_id)

    def by_address(self, channel: str, address: str) -> PartnerModel | None:
        for p in self.partners:
            if (channel == "sms" and p.phone == address) or (
                channel == "email" and p.email is not None and p.email.lower() == address.lower()
            ):
                return p
        return None
