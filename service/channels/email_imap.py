"""The reply mailbox over IMAP (imapclient): new mail, marking it handled, waiting for more.

Only the transport: which mail is new (UNSEEN in the configured folder), its raw bytes when
no larger than ``max_message_bytes`` (the size is asked first, so a huge message is never
downloaded), and marking one handled (flag ``\\Seen``, then a move to ``processed_folder``
where one is set). Waiting uses IMAP IDLE (RFC 2177) where the server offers it, renewed
every ``idle_renew_seconds``, else a poll every ``poll_seconds``; a stop ends either wait
within a second. What a message means is service/replies/mailbox.py's business.
Addresses and bodies never appear in log lines or errors.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from imapclient import SEEN, IMAPClient
from imapclient.exceptions import IMAPClientError

from service.core.config import ImapSettings, SmtpSecurity

log = structlog.get_logger("hearth.imap")
BATCH = 50  # messages read per pass; the rest wait for the next pass, right after


class MailboxError(Exception):
    """The server is unreachable, refused the login, or broke off: try again later."""


@dataclass(frozen=True)
class Fetched:
    uid: int
    raw: bytes | None  # None: larger than max_message_bytes, not downloaded


class ImapMailbox:
    def __init__(
        self,
        settings: ImapSettings,
        monotonic: Callable[[], float],
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.monotonic = monotonic
        self.tls_context = tls_context or ssl.create_default_context()
        self._client: IMAPClient | None = None

    @property
    def client(self) -> IMAPClient:
        if self._client is None:
            raise MailboxError("imap: not connected")
        return self._client

    def open(self) -> None:
        s = self.settings
        try:
            client = IMAPClient(
                s.host,
                port=s.port,
                ssl=s.security is SmtpSecurity.TLS,
                ssl_context=self.tls_context,
                timeout=s.timeout_seconds,
            )
            if s.security is SmtpSecurity.STARTTLS:
                client.starttls(self.tls_context)
            client.login(s.username, s.password.get_secret_value())
            client.select_folder(s.folder)
            if s.processed_folder and not client.folder_exists(s.processed_folder):
                client.create_folder(s.processed_folder)
        except (IMAPClientError, OSError) as exc:
            raise MailboxError(f"imap: cannot open the mailbox: {type(exc).__name__}") from None
        self._client = client

    def new_messages(self) -> list[Fetched]:
        """Up to BATCH messages not yet handled, oldest first."""
        try:
            uids = sorted(self.client.search(["UNSEEN"]))[:BATCH]
            if not uids:
                return []
            sizes = self.client.fetch(uids, ["RFC822.SIZE"])
            small = [u for u in uids if sizes[u][b"RFC822.SIZE"] <= self.settings.max_message_bytes]
            # BODY.PEEK leaves \Seen alone: a message is marked only once it is handled.
            bodies = self.client.fetch(small, ["BODY.PEEK[]"]) if small else {}
        except (IMAPClientError, OSError) as exc:
            raise MailboxError(f"imap: reading failed: {type(exc).__name__}") from None
        return [
            Fetched(u, bytes(bodies[u][b"BODY[]"]) if u in bodies else None)
            for u in uids
            if u in sizes
        ]

    def handled(self, uid: int) -> None:
        """Mark one message done: never read again (the database's Message-ID check stays)."""
        try:
            self.client.add_flags([uid], [SEEN])
            target = self.settings.processed_folder
            if target:
                if self.client.has_capability("MOVE"):
                    self.client.move([uid], target)
                else:
                    self.client.copy([uid], target)
                    self.client.delete_messages([uid])
                    self.client.expunge([uid] if self.client.has_capability("UIDPLUS") else None)
        except (IMAPClientError, OSError) as exc:
            raise MailboxError(f"imap: marking failed: {type(exc).__name__}") from None

    def wait(self, stop: threading.Event) -> None:
        """Until new mail may be there, ``stop`` is set, or it is time to look again."""
        s = self.settings
        if not (s.idle and self.client.has_capability("IDLE")):
            stop.wait(s.poll_seconds)
            return
        renew_at = self.monotonic() + s.idle_renew_seconds
        try:
            self.client.idle()
            try:
                while not stop.is_set() and self.monotonic() < renew_at:
                    # A second at most: the stop flag is seen that soon.
                    responses = self.client.idle_check(timeout=1.0)
                    if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                        return
            finally:
                self.client.idle_done()
        except (IMAPClientError, OSError) as exc:  # TimeoutError is an OSError
            raise MailboxError(f"imap: idle failed: {type(exc).__name__}") from None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except (IMAPClientError, OSError):
            client.shutdown()
