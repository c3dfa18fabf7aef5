"""The channel contract.

A :class:`Transport` sends one :class:`Message` to one recipient and returns a
:class:`Receipt`, or raises :class:`TransportError`. That is the whole contract:

* ``send`` is called from a worker thread; it must be safe to call concurrently and must not
  block longer than its configured timeout.
* ``TransportError(message, permanent=True)`` means retrying cannot help (invalid number,
  recipient unsubscribed, SMTP 5xx): the reminder becomes ``failed``.
* ``permanent=False`` means try again later (timeouts, 429, 5xx, SMTP 4xx); ``retry_after``
  carries the provider's hint in seconds where it gave one.
* ``unknown=True`` means the request may have reached the provider and the answer was lost
  (read timeout, a reset after the body went out, a proxy's 502/504): the message may be
  on its way. The dispatcher never sends such a message again before :meth:`Transport.find`
  has asked the provider for it.
* ``opted_out=True`` (always permanent) means the recipient revoked consent at the provider
  (Twilio 21610): the partner is marked opted out and the reminder ``skipped``.
* ``pace`` blocks until the channel's rate lets a message go; ``send`` itself never waits for
  pacing. They are separate so that the dispatcher can check, after a wait and right before
  the send, that the reminder is still its to send (a long wait can outlast the claim's
  lease). ``capacity`` tells how many messages pacing lets through in a span of time, so the
  dispatcher never claims more than it can send within a lease.
* Messages and addresses never appear in log lines or error messages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from service.db.models import Channel


@dataclass(frozen=True)
class Message:
    to: str  # E.164 number or email address
    text: str  # plain text body (SMS, or the email's text part)
    subject: str = ""  # email only
    html: str | None = None  # email only
    headers: dict[str, str] = field(default_factory=dict)  # email only (List-Unsubscribe...)
    reminder_id: int | None = None  # for status callbacks and logs


@dataclass(frozen=True)
class Receipt:
    provider_id: str  # Twilio SID, email Message-ID, console sequence


class TransportError(Exception):
    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        opted_out: bool = False,
        retry_after: float | None = None,
        code: str | None = None,
        unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.unknown = unknown
        self.permanent = permanent or opted_out
        self.opted_out = opted_out
        self.retry_after = retry_after
        self.code = code


def _nothing(_provider_id: str) -> bool:
    return False


class Transport:
    channel: Channel

    def send(self, message: Message) -> Receipt:
        raise NotImplementedError

    def find(
        self, message: Message, since: datetime, taken: Callable[[str], bool] = _nothing
    ) -> Receipt | None:
        """The provider's record of ``message`` (same recipient and text) sent at or after
        ``since``, or None when it has none; a message for which ``taken(provider_id)`` is
        true is another reminder's (two texts alike) and is passed over. Raises
        :class:`TransportError` when the provider cannot be asked now. A channel that cannot
        be asked returns None: its resend must be the same message to the recipient (email:
        the same Message-ID)."""
        return None

    def pace(self, message: Message, interrupt: threading.Event | None = None) -> float:
        """Wait until pacing lets ``message`` go (returns the seconds waited); a set
        ``interrupt`` ends the wait early. Unpaced channels return at once."""
        return 0.0

    def capacity(self, seconds: float) -> int | None:
        """How many messages pacing lets through in ``seconds`` (None: not paced)."""
        return None

    def close(self) -> None:
        """Release connections; called once at shutdown."""
