"""The outcome journal: each send's outcome on local disk the moment the provider answers.

The finisher writes outcomes to the database in batches, and a batch takes a while under
load; a worker killed meanwhile (SIGKILL, OOM) would leave rows the provider already
accepted ``sending``, and once their lease ran out they would be sent again. So every
outcome is first appended here, one ``write(2)`` of one JSON line: once that returns, the
outcome survives the death of the process (the kernel has it; only a crash of the machine
loses it). Whoever next opens the journal directory replays what a dead process left: a
restarted worker at start, a sibling worker on its next lease heartbeat. Replayed outcomes
go through the same conditional update as any other, so a row another worker has since
taken over is not touched.

Layout: each process holds one *slot* (``slot-N.lock``, under an exclusive ``flock`` that the
kernel drops when the process dies) and appends to segments ``slot-N.<seq>.journal``. A
segment is deleted once every outcome in it is in the database; a slot whose lock can be
taken belongs to no live process, and its segments are replayed and deleted. The journal
holds ids, claim tokens, states and error codes: no phone number, address or text.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("hearth.dispatch")
SEGMENT_BYTES = 1 << 20  # a new segment after this many bytes; old ones go when written
_SEGMENT = re.compile(r"^slot-(\d+)\.(\d+)\.journal$")


def encode(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, default=_default, separators=(",", ":")) + "\n").encode()


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    raise TypeError(f"not journaled: {type(value).__name__}")


def _revive(obj: dict[str, Any]) -> object:
    if set(obj) == {"$dt"}:
        return datetime.fromisoformat(obj["$dt"])
    return obj


def decode(line: bytes) -> dict[str, Any] | None:
    """One record, or None for a line cut short by the kill (it was never complete)."""
    try:
        record = json.loads(line, object_hook=_revive)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class Journal:
    """This process's slot in ``directory``: append outcomes, mark them written, find what
    dead processes left behind."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self._lock = threading.Lock()
        self._pending: Counter[int] = Counter()  # segment -> outcomes not yet written
        self.slot, self._slot_fd = self._take_slot()
        # Segments a dead holder of this slot left: replayed first, then deleted.
        self.inherited = sorted(self._segments(self.slot))
        self._seq = max((seq for seq, _ in self.inherited), default=0) + 1
        self._fd, self._size = self._open(self._seq), 0

    def _take_slot(self) -> tuple[int, int]:
        n = 0
        while True:
            fd = _try_lock(self.dir / f"slot-{n}.lock")
            if fd is not None:
                return n, fd
            n += 1

    def _segments(self, slot: int) -> Iterator[tuple[int, Path]]:
        for p in self.dir.iterdir():
            m = _SEGMENT.match(p.name)
            if m and int(m.group(1)) == slot:
                yield int(m.group(2)), p

    def _open(self, seq: int) -> int:
        path = self.dir / f"slot-{self.slot}.{seq}.journal"
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, record: dict[str, Any]) -> int:
        """Append one outcome; returns its segment, for :meth:`written`."""
        line = encode(record)
        with self._lock:
            if self._size >= SEGMENT_BYTES:
                os.close(self._fd)
                self._forget_if_done(self._seq)
                self._seq += 1
                self._fd, self._size = self._open(self._seq), 0
            os.write(self._fd, line)
            self._size += len(line)
            self._pending[self._seq] += 1
            return self._seq

    def written(self, segments: list[int]) -> None:
        """The outcomes appended to ``segments`` (one entry each) are in the database."""
        with self._lock:
            self._pending.subtract(segments)
            for seq in set(segments):
                if seq != self._seq:
                    self._forget_if_done(seq)

    def _forget_if_done(self, seq: int) -> None:
        if self._pending[seq] <= 0:
            self._pending.pop(seq, None)
            (self.dir / f"slot-{self.slot}.{seq}.journal").unlink(missing_ok=True)

    def orphans(self) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
        """Segments of slots no live process holds, with their records; the caller writes
        them and then calls :func:`drop`. Each slot is held while its segments are read and
        handed out, so two processes never replay the same one."""
        for lock in sorted(self.dir.glob("slot-*.lock")):
            slot = int(lock.stem.split("-")[1])
            if slot == self.slot:
                continue
            fd = _try_lock(lock)
            if fd is None:
                continue  # a live process holds it
            try:
                for _, path in sorted(self._segments(slot)):
                    yield path, read(path)
            finally:
                os.close(fd)  # drops the lock

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
            os.close(self._slot_fd)


def read(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as f:
        return [r for r in map(decode, f) if r is not None]


def drop(path: Path) -> None:
    path.unlink(missing_ok=True)


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
