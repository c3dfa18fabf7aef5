"""The sections of the settings: one pydantic model per ``[section]``, each key validated
where it is declared (docs/configuration.md describes every key)."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import phonenumbers
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from service.core import i18n
from service.core.crypto import Keyring, parse_keys, read_key_file
from service.core.exceptions import InvalidInput
from service.core.timeutil import is_zone


class _Section(BaseModel):
    # No inf or nan: an interval of inf starts, then crashes the first time it is waited.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        # pydantic takes true as 1: `batch_size = true` is a slip, not a batch of one.
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(v, bool) and field is not None and field.annotation in (int, float):
            raise ValueError("must be a number, not true or false")
        return v


# scheme -> the driver SQLAlchemy loads for it; the ones Hearth ships with.
_DB_SCHEMES = {"sqlite": "sqlite", "sqlite+pysqlite": "sqlite", "postgresql+psycopg": "postgresql"}


class DatabaseSettings(_Section):
    url: str = Field("sqlite:///hearth.db", description="SQLAlchemy URL")
    echo: bool = False
    lock_timeout_seconds: float = Field(30.0, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v.startswith("postgresql://") or v.startswith("postgres://"):
            v = "postgresql+psycopg://" + v.split("://", 1)[1]
        scheme, sep, _rest = v.partition("://")
        if not sep or scheme not in _DB_SCHEMES:
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        try:
            urlsplit(v).port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise ValueError("has a port that is not a number") from None
        return v


class DaemonSettings(_Section):
    horizon_hours: float = Field(48.0, gt=0, le=24 * 31)
    plan_interval_seconds: float = Field(300.0, gt=0)
    event_poll_seconds: float = Field(1.0, gt=0, le=2.0)
    dispatch_interval_seconds: float = Field(1.0, gt=0, le=60)
    batch_size: int = Field(500, ge=1, le=10_000)
    concurrency: int = Field(50, ge=1, le=1000)
    lease_seconds: float = Field(30.0, ge=5)
    shutdown_grace_seconds: float = Field(20.0, ge=0)
    stale_after_minutes: float = Field(30.0, gt=0)
    quiet_early_hours: float = Field(3.0, ge=0, le=12)
    retry_base_seconds: float = Field(30.0, gt=0)
    retry_max_seconds: float = Field(900.0, gt=0)
    run_web: bool = True
    # /readyz (in any process) fails when no dispatcher passed within this many seconds.
    tick_stale_seconds: float = Field(120.0, ge=30)
    # A process without the web service (`hearth worker`) serves /metrics here; 0: off.
    metrics_port: int = Field(0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    @model_validator(mode="after")
    def _window_holds_a_pass(self) -> DaemonSettings:
        # An idle loop passes every dispatch_interval_seconds and records its heartbeat at
        # most every 10 s: a shorter window would report a healthy dispatcher as stalled.
        if self.tick_stale_seconds < 3 * self.dispatch_interval_seconds:
            raise ValueError("tick_stale_seconds must be at least 3 x dispatch_interval_seconds")
        return self


class WebSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_base_url: str = "http://127.0.0.1:8080"
    feed_max_age_seconds: int = Field(900, ge=0)
    feed_refresh_hours: int = Field(6, ge=1, le=168)
    feed_async_lookup: bool = False  # PostgreSQL: token lookups on the loop (async pool)

    @field_validator("public_base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise ValueError("is not a URL (its port is not a number)") from None
        if not parts.hostname:
            raise ValueError("needs a host, e.g. https://hearth.example.org")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return v.rstrip("/")


class SmsBackend(StrEnum):
    TWILIO = "twilio"
    CONSOLE = "console"


class EmailBackend(StrEnum):
    SMTP = "smtp"
    CONSOLE = "console"


class ChannelSettings(_Section):
    sms: SmsBackend = SmsBackend.CONSOLE
    email: EmailBackend = EmailBackend.CONSOLE


class TwilioSettings(_Section):
    account_sid: str = ""
    auth_token: SecretStr = SecretStr("")
    from_number: str = ""
    messaging_service_sid: str = ""
    api_base_url: str = ""
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    sender_rate_per_second: float = Field(1.0, gt=0)
    account_rate_per_second: float = Field(100.0, gt=0)
    # Numbers behind the sender: 1 for a single number; a Messaging Service's number count
    # (it spreads the sends over them, so the pool sends that many times one number's rate).
    sender_count: int = Field(1, ge=1, le=10_000)
    status_callbacks: bool = True

    @property
    def pool_rate_per_second(self) -> float:
        """Segments a second the whole sender pool may send: its numbers, capped by the
        account (docs/operations.md, "Sender capacity")."""
        return min(self.sender_rate_per_second * self.sender_count, self.account_rate_per_second)

    @field_validator("from_number")
    @classmethod
    def _e164(cls, v: str) -> str:
        if v and not v.startswith("+"):
            raise ValueError("must be an E.164 number such as +15005550006")
        return v


class SmtpSecurity(StrEnum):
    STARTTLS = "starttls"
    TLS = "tls"
    NONE = "none"


class SmtpSettings(_Section):
    host: str = "localhost"
    port: int = Field(587, ge=1, le=65535)
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    username: str = ""
    password: SecretStr = SecretStr("")
    from_address: str = "Hearth <hearth@localhost>"
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    # What the mail server or relay accepts from this sender (most relays limit per minute).
    messages_per_minute: float = Field(60.0, gt=0)


class DeliverySettings(_Section):
    """How a nudge is routed and when it may go out (service/domain/routing.py,
    service/outbox/leveling.py)."""

    # A fallback channel's row waits this long after the preferred one's slot; it goes only
    # when that one failed, expired, was refused, or is still unknown this long after.
    fallback_after_seconds: float = Field(120.0, ge=0, le=3600)
    # Load leveling: a nudge may leave early, within a window that fits its kind, so a busy
    # minute drains before it rather than after.
    level: bool = True
    # A nudge 30 minutes or more ahead of its ritual may leave this fraction of its offset early.
    early_fraction: float = Field(0.25, ge=0, le=1)
    # A nudge less than 30 minutes ahead (an at-start one) at most this many seconds early.
    early_at_start_seconds: float = Field(120.0, ge=0, le=1800)
    # Never more than this early, whatever the offset.
    max_early_minutes: float = Field(15.0, ge=0, le=240)

    def early_window(self, offset_minutes: int) -> timedelta:
        """How much earlier than its due time a nudge of this offset may leave."""
        if not self.level:
            return timedelta(0)
        if offset_minutes >= 30:
            seconds = offset_minutes * 60 * self.early_fraction
        else:
            seconds = self.early_at_start_seconds
        return timedelta(seconds=min(seconds, self.max_early_minutes * 60))


class ImapSettings(_Section):
    """The mailbox partners' email replies arrive in (service/replies/mailbox.py); off while
    ``host`` or ``reply_address`` is empty."""

    host: str = ""
    port: int = Field(993, ge=1, le=65535)
    security: SmtpSecurity = SmtpSecurity.TLS
    username: str = ""
    password: SecretStr = SecretStr("")
    folder: str = "INBOX"
    # The base address; each partner's Reply-To is its plus form, hearth+<token>@example.org.
    reply_address: str = ""
    # Handled mail moves here (made if missing); empty: it is only flagged \Seen.
    processed_folder: str = ""
    idle: bool = True  # wait with IMAP IDLE where the server offers it, else poll
    # RFC 2177 allows 29 minutes; NAT routers and some providers drop a quiet connection sooner.
    idle_renew_seconds: float = Field(300.0, ge=10, le=1740)
    poll_seconds: float = Field(60.0, ge=1, le=3600)
    max_message_bytes: int = Field(256 * 1024, ge=4096, le=25 * 1024 * 1024)
    timeout_seconds: float = Field(30.0, gt=0, le=300)

    @field_validator("reply_address")
    @classmethod
    def _plain_address(cls, v: str) -> str:
        local, at, domain = v.strip().rpartition("@")
        if v and (not at or not local or "." not in domain or "+" in local or " " in v):
            raise ValueError("must be a plain address such as hearth@example.org (no + part)")
        return v.strip().lower()

    @property
    def enabled(self) -> bool:
        return bool(self.host and self.reply_address)


class RepairSettings(_Section):
    cooldown_hours: float = Field(2.0, ge=0)
    window_hours: float = Field(48.0, gt=0)
    duration_minutes: int = Field(45, ge=5, le=240)
    remind_minutes_before: int = Field(30, ge=0)
    followup_hours: float = Field(24.0, gt=0)


class DefaultsSettings(_Section):
    phone_region: str = "US"
    timezone: str = "UTC"
    language: str = "en"

    @field_validator("language")
    @classmethod
    def _language(cls, v: str) -> str:
        return i18n.check(v)

    @field_validator("phone_region")
    @classmethod
    def _region(cls, v: str) -> str:
        if v.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("must be a two-letter region code such as US, DE, GB")
        return v.upper()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        if not is_zone(v):
            raise ValueError("must be an IANA timezone such as Europe/Berlin")
        return v


class LogFormat(StrEnum):
    CONSOLE = "console"
    JSON = "json"


class LogSettings(_Section):
    format: LogFormat = LogFormat.CONSOLE
    level: str = "info"

    @field_validator("level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return v.lower()


class RepliesSettings(_Section):
    chase_hours: float = Field(3.0, ge=0, le=24)
    grace_hours: float = Field(0.0, ge=0, le=24 * 366)

    @model_validator(mode="after")
    def _chase_inside_grace(self) -> RepliesSettings:
        # The chase goes chase_hours before the grace period ends; a shorter grace period
        # would have it go out the moment the first partner says DONE, or before the ritual.
        if self.grace_hours and self.chase_hours and self.grace_hours <= self.chase_hours:
            raise ValueError(
                "grace_hours must be more than chase_hours (or 0: until the next occurrence)"
            )
        return self

    @property
    def grace(self) -> timedelta | None:
        """How long DONE counts after an occurrence starts; ``None``: until the next one."""
        return timedelta(hours=self.grace_hours) if self.grace_hours else None


class EncryptionSettings(_Section):
    # Fernet keys, comma-separated; the first encrypts, all decrypt (see service/core/crypto.py).
    keys: SecretStr = SecretStr("")
    # Or a file holding them (what `hearth init` writes): read here, once, into ``keys``.
    key_file: str = ""

    @model_validator(mode="before")
    @classmethod
    def _read_key_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("key_file"):
            return data
        given = data.get("keys") or ""
        if isinstance(given, SecretStr):
            given = given.get_secret_value()
        if given:
            raise ValueError("set either keys or key_file, not both")
        return {**data, "keys": read_key_file(Path(str(data["key_file"])))}

    @field_validator("keys")
    @classmethod
    def _fernet_keys(cls, v: SecretStr) -> SecretStr:
        try:
            parse_keys(v.get_secret_value())
        except InvalidInput as exc:
            raise ValueError(exc.problem + "; make one with `hearth crypto new-key`") from None
        return v

    @property
    def keyring(self) -> Keyring:
        return Keyring.from_text(self.keys.get_secret_value())


class RetentionSettings(_Section):
    days: int = Field(365, ge=1)
