"""Settings: a TOML file plus ``HEARTH_*`` environment overrides, validated once at start.

Lookup order for the file: explicit path (``--config``), ``$HEARTH_CONFIG``, ``./hearth.toml``,
else built-in defaults. Every key can be overridden from the environment as
``HEARTH_<SECTION>_<KEY>`` (``HEARTH_TWILIO_AUTH_TOKEN``, ``HEARTH_DATABASE_URL``); the
environment wins over the file; ``HEARTH_<SECTION>_<KEY>_FILE`` names a file holding the
value instead (secrets handed over as files). Any unknown key, wrong type or bad value
raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from service.core.exceptions import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str = Field("sqlite:///hearth.db", description="SQLAlchemy URL")
    echo: bool = False
    lock_timeout_seconds: float = Field(30.0, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if not (v.startswith("sqlite") or v.startswith("postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        if v.startswith("postgresql://") or v.startswith("postgres://"):
            v = "postgresql+psycopg://" + v.split("://", 1)[1]
        return v


class DaemonSettings(_Section):
    horizon_hours: float = Field(48.0, gt=0, le=24 * 31)
    plan_interval_seconds: float = Field(300.0, gt=0)
    event_poll_seconds: float = Field(1.0, gt=0, le=2.0)
    dispatch_interval_seconds: float = Field(1.0, gt=0, le=60)
    batch_size: int = Field(500, ge=1, le=10_000)
    concurrency: int = Field(50, ge=1, le=1000)
    lease_seconds: float = Field(120.0, ge=5)
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

    @field_validator("public_base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
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
    status_callbacks: bool = True

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


class RepairSettings(_Section):
    cooldown_hours: float = Field(2.0, ge=0)
    window_hours: float = Field(48.0, gt=0)
    duration_minutes: int = Field(45, ge=5, le=240)
    remind_minutes_before: int = Field(30, ge=0)
    followup_hours: float = Field(24.0, gt=0)


class DefaultsSettings(_Section):
    phone_region: str = "US"
    timezone: str = "UTC"

    @field_validator("phone_region")
    @classmethod
    def _region(cls, v: str) -> str:
        if v.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("must be a two-letter region code such as US, DE, GB")
        return v.upper()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA timezone such as Europe/Berlin") from None
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


class RetentionSettings(_Section):
    days: int = Field(365, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HEARTH_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    database: DatabaseSettings = DatabaseSettings()
    daemon: DaemonSettings = DaemonSettings()
    web: WebSettings = WebSettings()
    channels: ChannelSettings = ChannelSettings()
    twilio: TwilioSettings = TwilioSettings()
    smtp: SmtpSettings = SmtpSettings()
    repair: RepairSettings = RepairSettings()
    replies: RepliesSettings = RepliesSettings()
    defaults: DefaultsSettings = DefaultsSettings()
    log: LogSettings = LogSettings()
    retention: RetentionSettings = RetentionSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment beats the file: secrets and per-host tweaks live there.
        environ = _ENVIRON.get()
        env = env_settings if environ is None else _EnvironSource(settings_cls, environ)
        return (env, init_settings)


SECTIONS = tuple(Settings.model_fields)
_ENV_SKIP = {"HEARTH_CONFIG"}


def _split(name: str) -> tuple[str, str] | None:
    """(section, key) as ``HEARTH_<SECTION>_<KEY>`` spells them, in any case; ``None`` for a
    variable that is not a setting's (no prefix, or ``HEARTH_CONFIG``). Not checked."""
    upper = name.upper()
    if not upper.startswith("HEARTH_") or upper in _ENV_SKIP:
        return None
    section, _, key = upper[len("HEARTH_") :].lower().partition("_")
    return section, key


def _key_of(name: str) -> tuple[str, str] | None:
    """(section, key) for ``HEARTH_<SECTION>_<KEY>`` in any case, if that key exists."""
    split = _split(name)
    if split is not None and split[0] in SECTIONS and split[1] in _fields(split[0]):
        return split
    return None


def _fields(section: str) -> dict[str, Any]:
    return Settings.model_fields[section].annotation.model_fields  # type: ignore[union-attr]


def _read_files(environ: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``HEARTH_<SECTION>_<KEY>_FILE=/path``: the key's value is that file's text, without
    its trailing newline, as Docker secrets and systemd credentials hand secrets over.
    Returns the environment with each such variable in place of the ``_FILE`` one, and, for
    error messages, which variable names which file."""
    out = dict(environ)
    via: dict[str, str] = {}
    for name, path in environ.items():
        if not name.upper().endswith("_FILE") or _key_of(name) is not None:
            continue
        base = name[: -len("_FILE")]
        if _key_of(base) is None:
            continue  # not a key's _FILE: _check_env_keys names it
        other = next((n for n in environ if n.upper() == base.upper()), None)
        if other is not None:
            raise ConfigError(name, f"set either {other} or {name}, not both")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(name, f"cannot read {path}: {reason}") from None
        value = text.rstrip("\r\n")
        if not value.strip():
            raise ConfigError(name, f"{path} is empty")
        del out[name]
        out[base] = value
        via[base.upper()] = name
    return out, via


class _EnvironSource(EnvSettingsSource):
    """The environment source, reading a given mapping instead of ``os.environ``: the one
    :func:`load_settings` prepared, with values read from ``_FILE`` variables in place."""

    def __init__(self, settings_cls: type[BaseSettings], environ: dict[str, str]) -> None:
        self._given = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> dict[str, str | None]:
        return {k.lower(): v for k, v in self._given.items()}  # case_sensitive=False


# The mapping load_settings passes to Settings' environment source (None: os.environ).
_ENVIRON: ContextVar[dict[str, str] | None] = ContextVar("hearth_environ", default=None)


def _check_env_keys(environ: dict[str, str]) -> None:
    """pydantic-settings silently ignores unknown HEARTH_* variables; we refuse them."""
    for name in environ:
        split = _split(name)
        if split is None:
            continue
        section, key = split
        if section not in SECTIONS:
            raise ConfigError(name, f"unknown setting; sections are {', '.join(SECTIONS)}")
        if key not in _fields(section):
            raise ConfigError(name, f"unknown key {section}.{key}")


def _format_validation(
    err: ValidationError, origin: str, environ: dict[str, str], via: dict[str, str]
) -> ConfigError:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    msg = msg.removeprefix("Value error, ")
    # The environment wins over the file key by key: when a variable set this key, it is the
    # variable that is wrong, however the file reads.
    name = _env_name(first["loc"], environ)
    source = via.get(name.upper(), name) if name else origin
    return ConfigError(loc or origin, f"{msg} (from {source})")


def _env_name(loc: tuple[int | str, ...], environ: dict[str, str]) -> str | None:
    """The HEARTH_<SECTION>_<KEY> variable (as spelled in the environment) that supplied the
    setting at ``loc``, if one did."""
    if len(loc) < 2:
        return None
    wanted = f"HEARTH_{loc[0]}_{loc[1]}".upper()
    return next((name for name in environ if name.upper() == wanted), None)


def resolve_path(path: str | os.PathLike[str] | None, environ: dict[str, str]) -> Path | None:
    if path:
        return Path(path)
    if environ.get("HEARTH_CONFIG"):
        return Path(environ["HEARTH_CONFIG"])
    default = Path("hearth.toml")
    return default if default.exists() else None


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> Settings:
    given = dict(os.environ if environ is None else environ)
    env, via = _read_files(given)
    file = resolve_path(path, env)
    data: dict[str, Any] = {}
    origin = "environment"
    if file is not None:
        origin = str(file)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(str(file), "file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(file), f"not valid TOML: {exc}") from None
    _check_env_keys(env)
    for section, value in data.items():
        if section not in SECTIONS:
            raise ConfigError(section, f"unknown section (from {origin})")
        if not isinstance(value, dict):
            raise ConfigError(section, f"must be a table [{section}] (from {origin})")
    token = _ENVIRON.set(env)
    try:
        return Settings(**data)
    except ValidationError as err:
        raise _format_validation(err, origin, env, via) from None
    finally:
        _ENVIRON.reset(token)
