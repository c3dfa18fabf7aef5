"""Encryption at rest for what partners write (answers, free-text replies, reveal texts).

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under the keys in
``encryption.keys``: a comma-separated list, the first encrypts, every one decrypts
(MultiFernet). Rotation: put a new key first, keep the old ones, run
``hearth crypto reencrypt``, then drop the old keys. A sealed value is ``enc1:`` and the
Fernet token, so a value written before encryption was configured is told apart and sealed
by the re-encryption. Texts are never logged; neither are keys.

The keys may live in a file of their own (``encryption.key_file``, what ``hearth init``
writes, mode 0600): one key a line, or comma-separated, read once at start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from service.core.exceptions import InvalidInput

PREFIX = "enc1:"
UNREADABLE = "[unreadable: encrypted with a key no longer configured]"


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")


def read_key_file(path: Path) -> str:
    """The keys held in ``path``, comma-separated; ValueError with one line naming the
    problem (a missing, unreadable or empty file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ValueError(f"cannot read key_file {path}: {reason}") from None
    keys = ",".join(text.replace(",", " ").split())
    if not keys:
        raise ValueError(f"key_file {path} is empty")
    return keys


def ensure_key_file(path: Path) -> bool:
    """Create ``path`` holding a new key, mode 0600 from the first byte, unless it exists;
    True if it was made. An existing file is kept as it is: whatever was sealed under its
    keys could not be read without them."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(new_key() + "\n")
    return True


def others_can_read(path: Path) -> bool:
    """Whether every user of the machine may read the key file (a service's own group may:
    /etc/hearth is root:hearth 0640 in docs/operations.md)."""
    try:
        return bool(path.stat().st_mode & 0o007)
    except OSError:
        return False


def parse_keys(text: str) -> list[str]:
    """The configured keys, each checked; one clear line names a bad one by position."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    for n, key in enumerate(keys, 1):
        try:
            Fernet(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise InvalidInput(
                "encryption.keys",
                f"key {n} is not a Fernet key (32 url-safe base64 bytes)",
                "make one with `hearth crypto new-key`",
            ) from None
    return keys


def is_sealed(value: str | None) -> bool:
    return value is not None and value.startswith(PREFIX)


@dataclass(frozen=True)
class Keyring:
    """Seals and opens texts; without keys it refuses to seal (nothing is kept in clear)."""

    keys: tuple[str, ...]

    @classmethod
    def from_text(cls, text: str) -> Keyring:
        return cls(tuple(parse_keys(text)))

    @property
    def configured(self) -> bool:
        return bool(self.keys)

    @property
    def _fernet(self) -> MultiFernet:
        if not self.keys:
            raise InvalidInput(
                "encryption.keys", "no key configured", "see docs/configuration.md, [encryption]"
            )
        return MultiFernet([Fernet(k.encode("ascii")) for k in self.keys])

    def seal(self, text: str) -> str:
        return PREFIX + self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def open(self, value: str) -> str:
        """The text of a sealed value; a value stored before encryption as it is."""
        if not is_sealed(value):
            return value
        if not self.keys:
            return UNREADABLE
        try:
            return self._fernet.decrypt(value[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except InvalidToken:
            return UNREADABLE

    def reseal(self, value: str) -> str | None:
        """``value`` under the current key, or None if it already is (or cannot be read)."""
        if not is_sealed(value):
            return self.seal(value)
        token = value[len(PREFIX) :].encode("ascii")
        first = Fernet(self.keys[0].encode("ascii"))
        try:
            first.decrypt(token)
            return None  # under the current key already
        except InvalidToken:
            pass
        try:
            return PREFIX + self._fernet.rotate(token).decode("ascii")
        except InvalidToken:
            return None
