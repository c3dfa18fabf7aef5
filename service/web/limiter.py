"""The write rate limit of the partner page and the email grants' button.

Only requests that carry a valid token reach :meth:`WriteLimiter.allow` (the handlers look the
token's hash up first), so the keys are bounded by the number of real links, not by what a
client can invent. The map is bounded anyway: at most ``size`` keys, the least recently used
dropped first, each key at most ``limit`` timestamps, so every call costs O(limit) and the
memory O(size x limit) whatever arrives.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable

# Writes per token: enough for a person changing a few things, not for a script.
WRITE_LIMIT = 10
WRITE_WINDOW = 60.0  # seconds
SIZE = 10_000


class WriteLimiter:
    """At most ``limit`` writes per key in any ``window`` seconds of the injected monotonic
    clock. In memory, per process: a worker restart forgets, which only ever lets a few more
    through, and so does a key pushed out by ``size`` others."""

    def __init__(
        self,
        monotonic: Callable[[], float],
        limit: int = WRITE_LIMIT,
        window: float = WRITE_WINDOW,
        size: int = SIZE,
    ) -> None:
        self._now = monotonic
        self._limit = limit
        self._window = window
        self._size = size
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str) -> bool:
        now = self._now()
        with self._lock:
            times = self._seen.get(key)
            if times is None:
                times = self._seen[key] = deque(maxlen=self._limit)
                if len(self._seen) > self._size:
                    self._seen.popitem(last=False)
            else:
                self._seen.move_to_end(key)
            while times and times[0] <= now - self._window:
                times.popleft()
            if len(times) >= self._limit:
                return False
            times.append(now)
            return True

    def __len__(self) -> int:
        return len(self._seen)
