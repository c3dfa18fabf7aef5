"""What the daemon does when it sees a domain event.

Modules register reactions with :func:`on`; the daemon's event loop calls :func:`react` for
every new event, in id order, each reaction in its own transaction. A reaction must be
idempotent: after a crash the daemon may see the same event again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from service.db.context import Hearth
    from service.db.models import Event

Reaction = Callable[["Hearth", "Event"], None]
_REACTIONS: dict[str, list[Reaction]] = defaultdict(list)
log = structlog.get_logger(__name__)


def on(event_type: str) -> Callable[[Reaction], Reaction]:
    def register(fn: Reaction) -> Reaction:
        if fn not in _REACTIONS[event_type]:
            _REACTIONS[event_type].append(fn)
        return fn

    return register


def react(hearth: Hearth, event: Event) -> None:
    for fn in _REACTIONS.get(event.type, ()):
        try:
            fn(hearth, event)
        except Exception:
            # One broken reaction must not stop the daemon or the other reactions.
            log.exception("reaction_failed", event_id=event.id, event_type=event.type)


def reactions_for(event_type: str) -> list[Reaction]:
    return list(_REACTIONS.get(event_type, ()))
