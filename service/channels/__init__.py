"""Channels: one module per way of reaching a partner, behind :class:`base.Transport`."""

from __future__ import annotations

from service.channels.base import Message, Receipt, Transport, TransportError
from service.core.clock import SYSTEM_CLOCK, Clock
from service.core.config import EmailBackend, Settings, SmsBackend
from service.core.exceptions import ChannelNotConfigured, ConsoleInProduction
from service.db.models import Channel

__all__ = ["Message", "Receipt", "Transport", "TransportError", "build", "build_one"]


def build_one(settings: Settings, channel: Channel, clock: Clock = SYSTEM_CLOCK) -> Transport:
    """The configured transport for ``channel``; refuses a half-configured provider."""
    from service.channels.console import ConsoleTransport

    console = (settings.channels.sms if channel is Channel.SMS else settings.channels.email) == (
        "console"
    )
    if console and settings.web.public_base_url.startswith("https://"):
        # An https public URL is production: the console would print every number, address
        # and message body into the service's log.
        raise ConsoleInProduction(str(channel))
    if channel is Channel.SMS:
        if settings.channels.sms is SmsBackend.CONSOLE:
            return ConsoleTransport(Channel.SMS)
        from service.channels.sms_twilio import TwilioTransport

        tw = settings.twilio
        missing = [
            key
            for key, value in (
                ("twilio.account_sid", tw.account_sid),
                ("twilio.auth_token", tw.auth_token.get_secret_value()),
                (
                    "twilio.from_number or twilio.messaging_service_sid",
                    tw.from_number or tw.messaging_service_sid,
                ),
            )
            if not value
        ]
        if missing:
            raise ChannelNotConfigured("sms", "missing " + ", ".join(missing))
        callback = f"{settings.web.public_base_url}/twilio/status" if tw.status_callbacks else None
        return TwilioTransport(
            tw, status_callback_url=callback, pool_size=settings.daemon.concurrency, clock=clock
        )
    if settings.channels.email is EmailBackend.CONSOLE:
        return ConsoleTransport(Channel.EMAIL)
    from service.channels.email_smtp import SmtpTransport

    return SmtpTransport(settings.smtp)


def build(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> dict[Channel, Transport]:
    return {ch: build_one(settings, ch, clock) for ch in Channel}
