"""Email over SMTP: STARTTLS or implicit TLS, login, timeout; text + HTML parts.

One connection per send keeps the transport thread-safe and simple; reminders are a few per
partner per day. SMTP 5xx is permanent, 4xx and connection trouble are transient.
"""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from service.channels.base import Message, Receipt, Transport, TransportError
from service.core.config import SmtpSecurity, SmtpSettings
from service.db.models import Channel

# Headers folded only past RFC 5322's hard limit of 998: the default 78 makes the email
# package RFC 2047-encode a long unbreakable value, and an encoded List-Unsubscribe URL is
# one mailbox providers cannot use for one-click unsubscribe (RFC 8058).
POLICY = policy.SMTP.clone(max_line_length=998)


def classify(code: int, what: str) -> TransportError:
    if 500 <= code < 600:
        return TransportError(f"smtp {code}: {what}", permanent=True, code=str(code))
    return TransportError(f"smtp {code}: {what}", code=str(code))


class SmtpTransport(Transport):
    channel = Channel.EMAIL

    def __init__(self, settings: SmtpSettings, tls_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.tls_context = tls_context or ssl.create_default_context()
        domain = settings.from_address.rsplit("@", 1)[-1].strip(">").strip() or "hearth.local"
        self.domain = domain

    def build(self, message: Message) -> EmailMessage:
        msg = EmailMessage(policy=POLICY)
        msg["From"] = self.settings.from_address
        msg["To"] = message.to
        msg["Subject"] = message.subject
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = self.message_id(message)
        msg["Auto-Submitted"] = "auto-generated"
        for key, value in message.headers.items():
            msg[key] = value
        msg.set_content(message.text)
        if message.html:
            msg.add_alternative(message.html, subtype="html")
        return msg

    def message_id(self, message: Message) -> str:
        """One Message-ID per outbox row: an email sent again after an answer was lost (or a
        stale claim) is the same message to the recipient's mail system, not a second one.
        The sender's address is in it, so two installations' row numbers never collide."""
        if message.reminder_id is None:
            return make_msgid(domain=self.domain)
        tag = hashlib.sha256(self.settings.from_address.encode()).hexdigest()[:12]
        return f"<reminder-{message.reminder_id}.{tag}@{self.domain}>"

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.security is SmtpSecurity.TLS:
            return smtplib.SMTP_SSL(
                s.host, s.port, timeout=s.timeout_seconds, context=self.tls_context
            )
        conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds)
        if s.security is SmtpSecurity.STARTTLS:
            conn.starttls(context=self.tls_context)
        return conn

    def send(self, message: Message) -> Receipt:
        msg = self.build(message)
        try:
            with self._connect() as conn:
                if self.settings.username:
                    conn.login(self.settings.username, self.settings.password.get_secret_value())
                conn.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0]
            raise classify(code, "recipient refused") from None
        except smtplib.SMTPAuthenticationError as exc:
            # 535 (credentials refused) will not change by retrying; 454 is the server's
            # temporary trouble. The same rule as every other reply.
            raise classify(exc.smtp_code, "login refused") from None
        except smtplib.SMTPResponseException as exc:
            raise classify(exc.smtp_code, "message refused") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransportError(f"smtp unreachable: {type(exc).__name__}") from None
        return Receipt(provider_id=str(msg["Message-ID"]))
