"""Errors that build their own messages.

``HearthError`` subclasses are the expected failures: the CLI prints ``str(error)`` as one
line and exits with ``exit_code``; the web layer maps them to 4xx.
"""

from __future__ import annotations


class HearthError(Exception):
    exit_code = 1


class InvalidInput(HearthError):
    """Input that cannot be accepted; the message names the field and what would be right."""

    exit_code = 2

    def __init__(
        self, field: str, problem: str, hint: str | None = None, *, public: str | None = None
    ) -> None:
        self.field = field
        self.problem = problem
        self.hint = hint
        message = f"{field}: {problem}"
        if hint:
            message += f" ({hint})"
        # What may leave the terminal (an HTTP answer, a log line): for a problem that
        # quotes a phone number or an address, the same without the quote.
        self.public = message if public is None else f"{field}: {public}"
        super().__init__(message)


class NotFound(HearthError):
    exit_code = 2

    def __init__(self, what: str, ref: object) -> None:
        self.what = what
        self.ref = ref
        super().__init__(f"{what} {ref!r} not found")


class Ambiguous(HearthError):
    exit_code = 2

    def __init__(self, what: str, ref: object, candidates: list[str]) -> None:
        shown = ", ".join(candidates[:5])
        super().__init__(f"{what} {ref!r} is ambiguous: matches {shown}; use the id")


class Conflict(HearthError):
    """The request is well-formed but clashes with the current state."""

    exit_code = 2


class ConfigError(HearthError):
    exit_code = 2

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"config: {key}: {problem}")


class DatabaseUnavailable(HearthError):
    exit_code = 1

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"database unreachable at {url}: {reason}")


class DatabaseBusy(DatabaseUnavailable):
    """Another process held a lock longer than we wait (SQLite's busy timeout, PostgreSQL's
    lock_timeout). A kind of unavailability, so callers that handle that handle this too."""

    def __init__(self, url: str, reason: str) -> None:
        HearthError.__init__(
            self, f"database {url} is busy: {reason} (another process holds a lock; try again)"
        )


class ChannelNotConfigured(HearthError):
    exit_code = 2

    def __init__(self, channel: str, missing: str) -> None:
        super().__init__(f"channel {channel} is not configured: set {missing}")


class ConsoleInProduction(HearthError):
    exit_code = 2

    def __init__(self, channel: str) -> None:
        backend = "twilio" if channel == "sms" else "smtp"
        super().__init__(
            f"config: channels.{channel}: console prints full numbers, addresses and bodies; "
            f"refused with an https web.public_base_url (production): use {backend}"
        )


class SchemaMissing(HearthError):
    exit_code = 1

    def __init__(self, url: str) -> None:
        super().__init__(f"database {url} has no Hearth schema yet: run `hearth db upgrade`")


class SchemaBehind(HearthError):
    exit_code = 1

    def __init__(self, current: str | None, head: str) -> None:
        super().__init__(
            f"database schema is at {current or 'nothing'}, this Hearth needs {head}: "
            "run `hearth db upgrade`"
        )
