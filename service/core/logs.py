"""Logging: structlog, JSON in production and a readable console in development.

A redaction processor runs last before rendering, on every line from every module: phone
numbers, email addresses, feed, page and unsubscribe tokens and message bodies never reach a log.
Sensitive keys are dropped by name; free text is scrubbed by pattern as a second line of
defence (an exception message quoting a provider's answer, say).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import unquote

import phonenumbers
import structlog
from phonenumbers import Leniency

from service.core.config import LogFormat, LogSettings

REDACTED = "[redacted]"
SENSITIVE_KEYS = frozenset(
    {
        "to",
        "from",
        "from_",
        "phone",
        "email",
        "address",
        "body",
        "text",
        "message_body",
        "token",
        "feed_token",
        "page_token",
        "unsubscribe_token",
        "auth_token",
        "password",
        "prompt",
    }
)
_PATTERNS = (
    re.compile(r"\+\d[\d\s-]{6,16}\d|\b\d{10,15}\b"),  # phone numbers (E.164, bare digits)
    re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),  # email addresses
    # Tokens in URLs: everything after the prefix up to a quote or query, spaces and
    # newlines included, since a malformed request (%20, %0A) splits a token in the path.
    re.compile(r"(/(?:feeds|unsubscribe|page)/)[^?\"']+"),
    re.compile(r"\b[A-Za-z0-9_-]{32,}\b"),  # long secrets (tokens, SIDs, signatures)
)


# Numbers in national formats ("(415) 555-0123", "0151 23456789") are found by
# phonenumbers' matcher for the region Hearth reads national numbers in
# (defaults.phone_region, set by configure); a cheap look for seven digits comes first.
_DIGITS = re.compile(r"\d(?:[\s().\-/]*\d){6}")
_region = "US"


def scrub(text: str) -> str:
    if "%" in text:  # URL-encoded: %2B4915..., sam%40example.org, %2Ffeeds%2F
        text = unquote(text)
    text = _PATTERNS[2].sub(r"\1" + REDACTED, text)
    for pattern in (_PATTERNS[0], _PATTERNS[1], _PATTERNS[3]):
        text = pattern.sub(REDACTED, text)
    if _DIGITS.search(text):
        found = phonenumbers.PhoneNumberMatcher(text, _region, leniency=Leniency.VALID)
        for match in reversed(list(found)):
            text = text[: match.start] + REDACTED + text[match.end :]
    return text


def _redacted(key: str, value: Any, depth: int = 0) -> Any:
    """``value`` as it may be logged: sensitive keys dropped at any depth, strings scrubbed
    inside dicts, lists and tuples (a provider's error payload, a request's headers)."""
    if key.lower() in SENSITIVE_KEYS:
        return REDACTED
    if isinstance(value, str):
        return scrub(value)
    if depth > 8:  # a structure this deep is not what an operator reads: said, not shown
        return REDACTED
    if isinstance(value, dict):
        return {k: _redacted(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted("", v, depth + 1) for v in value]
    if isinstance(value, BaseException):
        return scrub(repr(value))
    if isinstance(value, bytes):
        return scrub(value.decode("utf-8", "replace"))
    return value


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key != "timestamp":
            event[key] = _redacted(key, event[key])
    return event


def configure(settings: LogSettings, stream: Any = None, phone_region: str = "US") -> None:
    """Route structlog and stdlib logging (uvicorn, apscheduler) through one pipeline."""
    global _region
    _region = phone_region
    level = getattr(logging, settings.level.upper())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.format is LogFormat.JSON
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # twilio.http_client logs every request and response at INFO: URLs and headers, one
    # line each, nothing an operator needs (our own lines say what was sent and how it went).
    for noisy in ("apscheduler", "uvicorn.access", "alembic", "twilio.http_client"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
