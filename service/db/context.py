"""The service context the CLI, the daemon and the web app share: settings, database, clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from service.core.clock import Clock, SystemClock
from service.core.config import Settings
from service.core.crypto import Keyring
from service.db.engine import Database


@dataclass
class Hearth:
    settings: Settings
    db: Database
    clock: Clock = field(default_factory=SystemClock)

    @cached_property
    def keys(self) -> Keyring:
        """What seals and opens partners' words (``[encryption] keys``)."""
        return self.settings.encryption.keyring

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None) -> Hearth:
        cfg = settings.database
        db = Database(cfg.url, echo=cfg.echo, lock_timeout=cfg.lock_timeout_seconds)
        return cls(settings=settings, db=db, clock=clock or SystemClock())
