"""Real local peers for tests: a Twilio Messages API stand-in and an SMTP sink.

Both are real network servers on 127.0.0.1 with ephemeral ports, so the production code
talks to them through the real ``twilio`` client (see ``service.channels.twilio_http``) and
``smtplib``. Fixtures live in :mod:`tests.peers.fixtures`.
"""

from __future__ import annotations

from typing import Any

from tests.peers.smtp_sink import ReceivedMail, SmtpSink
from tests.peers.twilio_standin import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    Fault,
    RecordedRequest,
    TwilioStandIn,
)

__all__ = ["Fault", "ReceivedMail", "RecordedRequest", "SmtpSink", "TwilioStandIn", "sections"]


def sections(standin: TwilioStandIn, sink: SmtpSink) -> dict[str, Any]:
    """Settings sections that send SMS through the stand-in and email to the sink."""
    return {
        "channels": {"sms": "twilio", "email": "smtp"},
        "twilio": {
            "account_sid": DEFAULT_ACCOUNT_SID,
            "auth_token": DEFAULT_AUTH_TOKEN,
            "from_number": "+15005550006",
            "api_base_url": standin.base_url,
            "sender_rate_per_second": 1000,
            "account_rate_per_second": 1000,
            "timeout_seconds": 5,
        },
        "smtp": {"host": sink.host, "port": sink.port, "security": "none"},
        "web": {"public_base_url": "https://hearth.example.org"},
    }
