"""A local SMTP sink: an aiosmtpd ``Controller`` on 127.0.0.1 with an ephemeral port.

Every accepted message is stored in :attr:`SmtpSink.messages` as a :class:`ReceivedMail`
(envelope sender, recipients, the message parsed with ``email.policy.default``).
Rejections can be injected at runtime, in order: ``reject_next(n, code, text, stage=...)``
answers the next ``n`` DATA (or RCPT) commands with that reply, so ``smtplib`` raises
``SMTPDataError`` (or ``SMTPRecipientsRefused``); ``reject_to(address, ...)`` refuses one
recipient until cleared.

With ``username``/``password`` the sink offers AUTH PLAIN and LOGIN over plain TCP
(``auth_require_tls=False``) and answers MAIL FROM with ``530`` until the client has
authenticated. (aiosmtpd's own ``auth_required`` is not used: without TLS it emits a
warning, and the suite turns warnings into errors.)
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Literal, Self, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Stage = Literal["rcpt", "data"]

_DEFAULT_TEXT: dict[int, str] = {
    421: "4.3.2 Service not available, closing transmission channel",
    450: "4.2.1 Mailbox temporarily unavailable",
    451: "4.3.0 Requested action aborted: local error in processing",
    452: "4.3.1 Insufficient system storage",
    550: "5.7.1 Message rejected",
    552: "5.3.4 Message size exceeds fixed maximum message size",
    553: "5.1.3 Mailbox name not allowed",
    554: "5.7.1 Transaction failed",
}


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    peer: str
    login: str | None  # the AUTH user, when the client authenticated
    received_at: float  # time.monotonic()
    accepted_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    def text(self) -> str:
        """The text/plain body (or the only body), decoded."""
        part = self.message.get_body(preferencelist=("plain",))
        if part is None:
            return ""
        return cast(EmailMessage, part).get_content()

    def html(self) -> str | None:
        part = self.message.get_body(preferencelist=("html",))
        return None if part is None else cast(EmailMessage, part).get_content()


@dataclass(frozen=True)
class Accepted:
    """One message the server took for one recipient: recipient, body, Message-ID, when."""

    to: str
    body: str
    message_id: str
    at: datetime


@dataclass(frozen=True)
class _Rejection:
    code: int
    text: str

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text}"


class _EphemeralController(Controller):
    """``Controller`` that binds port 0 and learns the real port before it self-tests."""

    def _create_server(self) -> Awaitable[Any]:
        async def create() -> Any:
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=0, ssl=self.ssl_context
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.sink.auth_enabled and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        rejection = self.sink._take_rejection("rcpt", address)
        if rejection is not None:
            return rejection.reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rejection = self.sink._take_rejection("data", None)
        if rejection is not None:
            return rejection.reply
        raw = envelope.original_content or b""
        if isinstance(envelope.content, bytes) and not raw:
            raw = envelope.content
        message: EmailMessage = email.message_from_bytes(raw, policy=email.policy.default)
        login = None
        auth_data = session.auth_data
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
        peer = session.peer
        self.sink._store(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                message=message,
                raw=raw,
                peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer),
                login=login,
                received_at=time.monotonic(),
            )
        )
        return "250 Message accepted for delivery"


class SmtpSink:
    """An SMTP server on ``127.0.0.1:<ephemeral>`` that keeps what it receives."""

    def __init__(
        self,
        username: str | None = None,
        password: str | None = None,
        *,
        hostname: str = "smtp-sink.test",
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.username = username
        self.password = password
        self.server_hostname = hostname
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self._reject: dict[Stage, deque[_Rejection]] = {"rcpt": deque(), "data": deque()}
        self._reject_to: dict[str, _Rejection] = {}
        self._controller: _EphemeralController | None = None

    @property
    def auth_enabled(self) -> bool:
        return self.username is not None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        if self._controller is not None:
            raise RuntimeError("SmtpSink already started")
        kwargs: dict[str, Any] = {}
        if self.auth_enabled:
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        controller = _EphemeralController(
            _Handler(self),
            hostname="127.0.0.1",
            port=0,
            server_hostname=self.server_hostname,
            ready_timeout=10.0,
            **kwargs,
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("SmtpSink is not running")
        return int(self._controller.port)

    # -- rejections ----------------------------------------------------------------------

    def reject_next(
        self, n: int = 1, code: int = 550, text: str | None = None, *, stage: Stage = "data"
    ) -> None:
        """Answer the next ``n`` DATA (or RCPT) commands with ``code text``."""
        if stage not in ("rcpt", "data"):
            raise ValueError(f"stage must be 'rcpt' or 'data', not {stage!r}")
        rejection = _Rejection(code, text or _DEFAULT_TEXT.get(code, "Rejected"))
        with self._lock:
            self._reject[stage].extend([rejection] * n)

    def reject_to(self, address: str, code: int = 550, text: str | None = None) -> None:
        """Refuse RCPT TO ``address`` (case-insensitive) until :meth:`clear_rejections`."""
        text = text or "5.1.1 Recipient address rejected: User unknown"
        with self._lock:
            self._reject_to[address.lower()] = _Rejection(code, text)

    def clear_rejections(self) -> None:
        with self._lock:
            for queue in self._reject.values():
                queue.clear()
            self._reject_to.clear()

    def reset(self) -> None:
        self.clear_rejections()
        with self._lock:
            self._messages.clear()

    # -- what was received ---------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMail]:
        """Snapshot of accepted messages, in order."""
        with self._lock:
            return list(self._messages)

    @property
    def accepted(self) -> list[Accepted]:
        """The provider's record: one entry per recipient of every accepted message."""
        return [
            Accepted(rcpt, mail.text(), str(mail.message.get("Message-ID", "")), mail.accepted_at)
            for mail in self.messages
            for rcpt in mail.rcpt_tos
        ]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMail]:
        """Block until at least ``count`` messages arrived; raise ``TimeoutError`` if not."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages
            if len(messages) >= count:
                return messages
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(messages)} of {count} messages after {timeout}s")
            time.sleep(0.01)

    # -- handler side (event-loop thread) --------------------------------------------------

    def _store(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._messages.append(mail)

    def _take_rejection(self, stage: Stage, address: str | None) -> _Rejection | None:
        with self._lock:
            queue = self._reject[stage]
            if queue:
                return queue.popleft()
            if address is not None:
                return self._reject_to.get(address.lower())
            return None

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.username is not None
            and self.password is not None
            and auth_data.login == self.username.encode()
            and auth_data.password == self.password.encode()
        )
        if ok:
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)
