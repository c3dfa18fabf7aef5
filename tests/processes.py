"""Helpers for tests that drive outside processes (the daemon, the image's entrypoint)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def free_port() -> int:
    """A loopback port nothing listens on right now, for a process that must be told one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)  # polling an outside process, not waiting for time to pass
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
