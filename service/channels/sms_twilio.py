"""SMS through Twilio's Messages API with the real ``twilio`` client.

Twilio's answers become our error classes in :mod:`service.channels.twilio_codes`. Every
request has a timeout; :meth:`TwilioTransport.pace` paces sends per sender and
per account (the caller waits there before ``send``). A 429 opens the account's breaker for
its Retry-After: every other send waits too, then one probe, then the rest in their order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageInstance

from service.channels.base import Message, Receipt, Transport, TransportError
from service.channels.pacing import Breaker, Pacer
from service.channels.segments import MAX_SEGMENTS, segments
from service.channels.twilio_codes import classify
from service.channels.twilio_http import (
    TwilioHttp,
    Unanswered,
    Unreached,
    close_client,
    make_client,
    retry_after_seconds,
)
from service.core.clock import SYSTEM_CLOCK, Clock
from service.core.config import TwilioSettings
from service.db.models import Channel
from service.domain.unsubscribe import masked

# How long the account waits after a 429 that names no Retry-After.
DEFAULT_RETRY_AFTER = 5.0
# Statuses of a message the provider took and then could not deliver: the receipts handle
# those (docs/delivery.md), they do not stand for the send that is being settled.
NOT_TAKEN = {"failed", "undelivered", "canceled"}
LOOKUP_LIMIT = 200  # messages read when settling one send; a partner gets a few a day
QUEUED_LIMIT = 20
PENDING = {"accepted", "scheduled", "queued", "sending"}  # taken, not handed on yet


class TwilioTransport(Transport):
    channel = Channel.SMS

    def __init__(
        self,
        settings: TwilioSettings,
        status_callback_url: str | None = None,
        pacer: Pacer | None = None,
        pool_size: int = 50,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self.client: Client = make_client(
            settings.account_sid,
            settings.auth_token.get_secret_value(),
            settings.api_base_url,
            settings.timeout_seconds,
            pool_size=pool_size,
        )
        # Resolved now: the client imports the API's modules on first use, and a first burst
        # of sends would have every thread wait on that import at once.
        self.messages = self.client.messages
        self.sender = settings.messaging_service_sid or settings.from_number
        self.status_callback_url = status_callback_url
        # The sender is one number, or a Messaging Service spreading over sender_count.
        self.pacer = pacer or Pacer(
            settings.sender_rate_per_second * settings.sender_count,
            settings.account_rate_per_second,
        )
        # The breaker's hold is part of the schedule (a Retry-After), so it reads the service
        # clock; the buckets pace a real provider rate and keep real time.
        self.breaker = Breaker(
            monotonic=clock.monotonic, probe_timeout=settings.timeout_seconds + 5
        )

    def pace(self, message: Message, interrupt: threading.Event | None = None) -> float:
        # The breaker first, then the buckets: after a storm the sends that waited take their
        # pacing slots in the order they came, and leave at the configured rate.
        n = segments(message.text)
        waited = 0.0
        ticket = self.breaker.ticket()
        while True:
            probe = self.breaker.wait(ticket, interrupt)
            if interrupt is not None and interrupt.is_set():
                return waited
            waited += self.pacer.acquire(self.sender, n, interrupt)
            if probe or self.breaker.closed:
                return waited
            # A 429 came while this send waited for its slot: wait for the breaker again.

    def capacity(self, seconds: float) -> int:
        # Counted at the longest text we send: a claim sized by it never outlasts its lease.
        return max(1, int(self.pacer.rate() * seconds / MAX_SEGMENTS))

    def send(self, message: Message) -> Receipt:
        kwargs: dict[str, str] = {"to": message.to, "body": message.text}
        if self.settings.messaging_service_sid:
            kwargs["messaging_service_sid"] = self.settings.messaging_service_sid
        else:
            kwargs["from_"] = self.settings.from_number
        if self.status_callback_url:
            kwargs["status_callback"] = self.status_callback_url
        try:
            created = self.messages.create(**kwargs)
        except TwilioRestException as exc:
            error = self._error(exc)
            if exc.status == 429 or exc.code == 20429:
                # The account is rate-limited, not this message: hold every send.
                self.breaker.trip(error.retry_after or DEFAULT_RETRY_AFTER)
            else:
                self.breaker.passed()
            raise error from None
        except Unreached as exc:
            self.breaker.passed()
            raise TransportError(f"twilio unreachable: {exc}") from None
        except Unanswered as exc:
            self.breaker.passed()
            raise TransportError(f"twilio answer lost: {exc}", unknown=True) from None
        self.breaker.passed()
        return Receipt(provider_id=str(created.sid))

    def find(
        self, message: Message, since: datetime, taken: Callable[[str], bool] = lambda _: False
    ) -> Receipt | None:
        """Twilio's Messages list, filtered by ``To`` and ``DateSent``, newest first: the
        message with this very text, unless Twilio reports it failed (a receipt's matter)
        or another reminder records it already (two texts alike)."""
        text = masked(message.text)  # each send's page link is its own

        def ours(m: MessageInstance) -> bool:
            return masked(m.body or "") == text and not taken(str(m.sid))

        try:
            for m in self.messages.list(to=message.to, date_sent_after=since, limit=LOOKUP_LIMIT):
                if m.status not in NOT_TAKEN and ours(m):
                    return Receipt(provider_id=str(m.sid))
            # Twilio stamps DateSent when it hands a text on: one still in its queue has none
            # yet, so the newest texts to the number are read too.
            for m in self.messages.list(to=message.to, limit=QUEUED_LIMIT):
                created = m.date_created
                pending = m.status in PENDING and (created is None or created >= since)
                if pending and ours(m):
                    return Receipt(provider_id=str(m.sid))
        except TwilioRestException as exc:
            raise self._error(exc) from None
        except TwilioException:  # a list page that did not load: the SDK keeps no code
            http = self.client.http_client
            response = http.last_response if isinstance(http, TwilioHttp) else None
            status = response.status_code if response is not None else 500
            raise classify(status, None, retry_after_seconds(response)) from None
        except (Unreached, Unanswered) as exc:
            raise TransportError(f"twilio unreachable: {exc}") from None
        return None

    def _error(self, exc: TwilioRestException) -> TransportError:
        http = self.client.http_client
        response = http.last_response if isinstance(http, TwilioHttp) else None
        return classify(exc.status, exc.code, retry_after_seconds(response))

    def close(self) -> None:
        close_client(self.client)
