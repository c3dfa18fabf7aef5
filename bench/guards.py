"""What the request guards cost on every request: ``BodyLimit`` (service/web/limits.py) and
``SameOrigin`` (service/web/origin.py) around a trivial ASGI app, against the app alone, in
this process (no server, no network: only the guards' own work is left to measure).

Requests: a feed-like GET (the hot path), and a page form POST with its 200-byte body.

    python -m bench.guards [--requests 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.web.limits import BodyLimit
from service.web.origin import SameOrigin

GET: Scope = {
    "type": "http",
    "method": "GET",
    "path": "/feeds/" + "A" * 43 + ".ics",
    "raw_path": b"/feeds/" + b"A" * 43 + b".ics",
    "headers": [(b"host", b"hearth.example.org"), (b"user-agent", b"calendar/1.0")],
}
POST: Scope = {
    "type": "http",
    "method": "POST",
    "path": "/page/" + "A" * 43 + "/pause",
    "raw_path": b"/page/" + b"A" * 43 + b"/pause",
    "headers": [
        (b"host", b"hearth.example.org"),
        (b"origin", b"https://hearth.example.org"),
        (b"sec-fetch-site", b"same-origin"),
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-length", b"200"),
    ],
}


async def trivial(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["method"] == "POST":
        await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _run(app: ASGIApp, scope: Scope, n: int) -> float:
    body: Message = {"type": "http.request", "body": b"a" * 200, "more_body": False}

    async def receive() -> Message:
        return body

    async def send(message: Message) -> None:
        return None

    started = time.perf_counter()
    for _ in range(n):
        await app(scope, receive, send)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200_000)
    n = parser.parse_args().requests
    guarded = BodyLimit(SameOrigin(trivial, public_base_url="https://hearth.example.org"))
    for name, scope in (("GET feed", GET), ("POST page form", POST)):
        asyncio.run(_run(guarded, scope, n // 10))  # warm up
        base = asyncio.run(_run(trivial, scope, n))
        both = asyncio.run(_run(guarded, scope, n))
        print(
            f"{name:15} app alone {base / n * 1e6:6.2f} µs/request, with the guards "
            f"{both / n * 1e6:6.2f} µs/request: +{(both - base) / n * 1e6:.2f} µs "
            f"(ratio {both / base:.2f})"
        )


if __name__ == "__main__":
    main()
