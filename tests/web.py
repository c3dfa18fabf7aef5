"""The Starlette app served by a real uvicorn on an ephemeral loopback port, in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import uvicorn
from starlette.applications import Starlette

from service.db.context import Hearth
from service.web import create_app


@contextmanager
def serve(
    hearth: Hearth,
    *,
    runs_dispatcher: bool = False,
    app: Starlette | None = None,
    lifespan: Literal["on", "off"] = "off",
) -> Iterator[str]:
    """Yields the base URL (``http://127.0.0.1:PORT``) while the server runs (``app``: one
    made by the caller, to look at its state; ``lifespan="on"``: as ``hearth web`` runs)."""
    config = uvicorn.Config(
        app or create_app(hearth, runs_dispatcher=runs_dispatcher),
        host="127.0.0.1",
        port=0,
        log_config=None,
        access_log=False,
        lifespan=lifespan,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)  # waiting for a server thread to bind, not for time to pass
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
