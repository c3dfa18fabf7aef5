"""Real local peers for tests: a Twilio Messages API stand-in and an SMTP sink.

Both are real network servers on 127.0.0.1 with ephemeral ports, so the production code
talks to them through the real ``twilio`` client (see ``service.channels.twilio_http``) and
``smtplib``. Fixtures live in :mod:`tests.peers.fixtures`.
"""

from tests.peers.smtp_sink import ReceivedMail, SmtpSink
from tests.peers.twilio_standin import Fault, RecordedRequest, TwilioStandIn

__all__ = ["Fault", "ReceivedMail", "RecordedRequest", "SmtpSink", "TwilioStandIn"]
