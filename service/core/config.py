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
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from service.core.exceptions import ConfigError
from service.core.sections import (
    ChannelSettings,
    DaemonSettings,
    DatabaseSettings,
    DefaultsSettings,
    DeliverySettings,
    EmailBackend,
    EncryptionSettings,
    ImapSettings,
    LogFormat,
    LogSettings,
    RepairSettings,
    RepliesSettings,
    RetentionSettings,
    SmsBackend,
    SmtpSecurity,
    SmtpSettings,
    TwilioSettings,
    WebSettings,
)


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
    imap: ImapSettings = ImapSettings()
    delivery: DeliverySettings = DeliverySettings()
    repair: RepairSettings = RepairSettings()
    replies: RepliesSettings = RepliesSettings()
    defaults: DefaultsSettings = DefaultsSettings()
    log: LogSettings = LogSettings()
    retention: RetentionSettings = RetentionSettings()
    encryption: EncryptionSettings = EncryptionSettings()

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


class _EnvironSource(PydanticBaseSettingsSource):
    """The environment source, reading a given mapping instead of ``os.environ``: the one
    :func:`load_settings` prepared, with values read from ``_FILE`` variables in place.
    ``HEARTH_<SECTION>_<KEY>`` in any case sets ``<section>.<key>`` (the stock source's
    reading with ``env_nested_max_split=1``); the keys were checked against the sections
    before, and the values are validated with the file's."""

    def __init__(self, settings_cls: type[BaseSettings], environ: dict[str, str]) -> None:
        super().__init__(settings_cls)
        self._sections: dict[str, dict[str, str]] = {}
        for name, value in environ.items():
            found = _key_of(name)
            if found is not None:
                self._sections.setdefault(found[0], {})[found[1]] = value

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._sections.get(field_name), field_name, True

    def __call__(self) -> dict[str, Any]:
        return {name: dict(values) for name, values in self._sections.items()}


# The mapping load_settings passes to Settings' environment source (None: os.environ).

# The sections are part of the settings: importers take them from here.
__all__ = [
    "SECTIONS",
    "ChannelSettings",
    "ConfigError",
    "DaemonSettings",
    "DatabaseSettings",
    "DefaultsSettings",
    "EmailBackend",
    "EncryptionSettings",
    "LogFormat",
    "LogSettings",
    "RepairSettings",
    "RepliesSettings",
    "RetentionSettings",
    "Settings",
    "SmsBackend",
    "SmtpSecurity",
    "SmtpSettings",
    "TwilioSettings",
    "WebSettings",
    "load_settings",
    "resolve_path",
]

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


def _beside(data: dict[str, Any], file: Path) -> dict[str, Any]:
    """A relative ``encryption.key_file`` in a config file is read beside that file, so
    Hearth finds the key ``hearth init`` wrote from whatever directory it runs in."""
    enc = data.get("encryption")
    name = enc.get("key_file") if isinstance(enc, dict) else None
    if not isinstance(enc, dict) or not isinstance(name, str) or not name:
        return data
    return {**data, "encryption": {**enc, "key_file": str(file.parent / name)}}


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
        except UnicodeDecodeError as exc:
            raise ConfigError(str(file), f"not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise ConfigError(str(file), f"cannot read: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(file), f"not valid TOML: {exc}") from None
    _check_env_keys(env)
    for section, value in data.items():
        if section not in SECTIONS:
            raise ConfigError(section, f"unknown section (from {origin})")
        if not isinstance(value, dict):
            raise ConfigError(section, f"must be a table [{section}] (from {origin})")
    if file is not None:
        data = _beside(data, file)
    token = _ENVIRON.set(env)
    try:
        return Settings(**data)
    except ValidationError as err:
        raise _format_validation(err, origin, env, via) from None
    finally:
        _ENVIRON.reset(token)
