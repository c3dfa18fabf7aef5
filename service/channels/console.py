"""The console channel: prints each message instead of sending it.

The default of ``make run``, so a new user sees the engine work with no accounts. Output goes
to stdout (not the log): it is the product's output here, not a log line.
"""

from __future__ import annotations

import itertools
import sys
import threading
from typing import TextIO

from service.channels.base import Message, Receipt, Transport
from service.db.models import Channel


class ConsoleTransport(Transport):
    def __init__(self, channel: Channel, stream: TextIO | None = None) -> None:
        self.channel = channel
        self._stream = stream
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def send(self, message: Message) -> Receipt:
        stream = self._stream or sys.stdout
        with self._lock:
            n = next(self._seq)
            head = f"--- {self.channel.value} to {message.to}"
            if message.subject:
                head += f" | {message.subject}"
            stream.write(f"{head}\n{message.text.rstrip()}\n")
            stream.flush()
        return Receipt(provider_id=f"console-{self.channel.value}-{n}")
