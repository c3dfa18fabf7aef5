"""Email replies: the mailbox worker, reading partners' replies the way help desks do.

Every email Hearth sends carries ``Reply-To: hearth+<token>@example.org``
(service/domain/reply_address.py). The worker reads the mailbox over IMAP
(service/channels/email_imap.py), finds the writer by that token in the recipient headers,
never by ``From``, takes the new words (service/replies/mail_text.py) and hands them to the
same router as an SMS reply (service/replies/inbound.py): DONE, SKIP, PAUSE, STOP, an answer
to the shared question work alike, in the partner's language. The answer goes back by email
through the outbox.

Each message is handled once: its Message-ID (hashed) is the reply's provider id, so mail
read twice (a crash between the commit and the flag) is acted on once; once committed it is
flagged ``\\Seen`` (and moved, if configured). Mail without a valid token, automatic mail
(vacation replies, bounces, lists) and oversized mail are marked handled and logged, without
any address, token or text.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import sqlalchemy as sa
import structlog

from service.channels.email_imap import ImapMailbox, MailboxError
from service.core.exceptions import DatabaseUnavailable
from service.core.metrics import EMAIL_REPLIES
from service.db.context import Hearth
from service.db.models import Channel, Partner
from service.domain import reply_address
from service.replies import inbound, mail_text, outgoing

log = structlog.get_logger("hearth.mailbox")
# Where a mail system writes who a message was for; Delivered-To and X-Original-To keep the
# plus address when a partner's client dropped it from To (a Bcc, a forward).
RECIPIENT_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To")
BACKOFF_START, BACKOFF_MAX = 2.0, 300.0


def message_key(msg: EmailMessage, raw: bytes) -> str:
    """The reply's provider id: its Message-ID hashed (any length fits), else the bytes'."""
    mid = str(msg.get("Message-ID", "")).strip()
    source = mid.encode() if mid else raw
    return "email:" + hashlib.sha256(source).hexdigest()[:56]


def process(hearth: Hearth, raw: bytes) -> str:
    """Act on one message; returns what was done (for the log and the tests)."""
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception:  # the email package is lenient; this is a broken message indeed
        return "unreadable"
    assert isinstance(msg, EmailMessage)
    if mail_text.is_automatic(msg):
        return "automatic"
    headers: list[str] = []
    for name in RECIPIENT_HEADERS:
        headers += [str(v) for v in msg.get_all(name, [])]
    tokens = reply_address.tokens_in(headers, hearth.settings.imap.reply_address)
    with hearth.db.session(immediate=True) as s:
        partner: Partner | None = None
        for tok in tokens:
            partner = reply_address.partner_for(s, tok)
            if partner is not None:
                break
        if partner is None:
            return "unknown_token" if tokens else "no_token"
        text = mail_text.new_words(mail_text.body_text(msg), partner.language)
        if not text:
            return "empty"
        now = hearth.clock.now()
        sid = message_key(msg, raw)
        answer = inbound.handle(hearth, s, now, partner, text, sid, channel=Channel.EMAIL)
        if answer and not outgoing.message(hearth, s, now, partner, answer, channel=Channel.EMAIL):
            return "handled_no_email"  # the answer could not go: the partner has no email
        return "handled" if answer else "handled_silent"


class MailboxWorker:
    """One small thread of the daemon: read, act, mark handled, wait for more."""

    def __init__(
        self,
        hearth: Hearth,
        stop: threading.Event,
        on_queued: Callable[[], None] = lambda: None,
        mailbox: ImapMailbox | None = None,
    ) -> None:
        self.hearth = hearth
        self.stop = stop
        self.on_queued = on_queued
        self.mailbox = mailbox or ImapMailbox(hearth.settings.imap, hearth.clock.monotonic)

    def drain(self) -> int:
        """Handle every new message; returns how many were read."""
        count = 0
        while not self.stop.is_set():
            batch = self.mailbox.new_messages()
            if not batch:
                break
            for fetched in batch:
                outcome = "too_large" if fetched.raw is None else self._process(fetched.raw)
                self.mailbox.handled(fetched.uid)
                log.info("email_reply_read", outcome=outcome)
                EMAIL_REPLIES.labels(outcome=outcome).inc()
                count += 1
            self.on_queued()  # answers were queued: the dispatcher sends them now
        return count

    def _process(self, raw: bytes) -> str:
        try:
            return process(self.hearth, raw)
        except DatabaseUnavailable:
            raise  # the database is away: the message stays unread, the worker backs off
        except sa.exc.IntegrityError:
            return "duplicate"  # another worker acted on the same Message-ID first
        except Exception:
            # A bug this message brings out: logged, and marked handled, so that one message
            # cannot hold up every reply after it.
            log.exception("email_reply_failed")
            return "failed"

    def run(self) -> None:
        backoff = BACKOFF_START
        while not self.stop.is_set():
            try:
                self.mailbox.open()
                while not self.stop.is_set():
                    self.drain()
                    backoff = BACKOFF_START  # a full pass: the connection is good
                    self.mailbox.wait(self.stop)
            except MailboxError as exc:
                log.warning("mailbox_unavailable", error=str(exc), retry_in_s=backoff)
            except Exception:
                # The database is away, or a bug: the message stays unread and is tried again.
                log.exception("mailbox_pass_failed", retry_in_s=backoff)
            finally:
                self.mailbox.close()
            self.stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
