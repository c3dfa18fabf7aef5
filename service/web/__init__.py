"""The Starlette app: feeds, partner pages, Twilio webhooks, unsubscribe, health and metrics.

Each concern is one module exposing ``routes``; :func:`create_app` mounts them all. Handlers
reach the service context through ``request.app.state.hearth``. Every 404 is the same
response (:func:`not_found`), whether no route matched or a handler raised
``HTTPException(404)``: a feed or unsubscribe URL must not reveal, by a different body or
header, whether its token was ever valid or which part of the path was wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.calendar import feed_tokens
from service.core.clock import Clock
from service.core.logs import scrub
from service.db.context import Hearth
from service.web import feeds, health, twilio, unsubscribe
from service.web.limiter import WriteLimiter
from service.web.limits import BodyLimit
from service.web.origin import SameOrigin
from service.web.page import routes as page

log = structlog.get_logger("hearth.web")


class AccessLog:
    """One line per request, with tokens cut out of the path (uvicorn's own log is off)."""

    def __init__(self, app: ASGIApp, clock: Clock) -> None:
        self.app = app
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self.clock.monotonic()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            log.info(
                "http_request",
                method=scope["method"],
                path=scrub(scope["path"]),
                status=status,
                ms=round((self.clock.monotonic() - started) * 1000, 1),
            )


NOT_FOUND_BODY = "Not Found\n"


async def not_found(request: Request, exc: Exception) -> Response:
    """The app's one 404, for route misses and handlers alike (HEAD drops the body only)."""
    return PlainTextResponse(NOT_FOUND_BODY, status_code=404)


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    reader: feed_tokens.LoopReader | feed_tokens.AsyncReader | None = app.state.feed_reader
    hearth: Hearth = app.state.hearth
    if reader is None and hearth.settings.web.feed_async_lookup:
        # PostgreSQL: the token lookup on this loop, through an async pool that lives with it.
        reader = feed_tokens.AsyncReader.for_engine(hearth.db.engine)
        if reader is not None:
            await reader.open()
            app.state.feed_reader = reader
    yield
    if isinstance(reader, feed_tokens.AsyncReader):
        await reader.close()
    elif reader is not None:
        reader.close()  # without a lifespan (tests), it closes when the app is collected


def create_app(hearth: Hearth, *, runs_dispatcher: bool = False) -> Starlette:
    """``runs_dispatcher``: this process also dispatches (``hearth serve``), so ``/readyz``
    checks that its own loop ticks, besides the heartbeat any dispatcher writes."""
    app = Starlette(
        routes=[
            *health.routes,
            health.metrics_endpoint(hearth),
            *feeds.routes,
            *page.routes,
            *twilio.routes,
            *unsubscribe.routes,
        ],
        middleware=[
            Middleware(AccessLog, clock=hearth.clock),
            Middleware(BodyLimit),  # before anything reads a body (service/web/limits.py)
            Middleware(SameOrigin, public_base_url=hearth.settings.web.public_base_url),
        ],
        exception_handlers={404: not_found},
        lifespan=_lifespan,
    )
    app.state.hearth = hearth
    app.state.feed_cache = feeds.FeedCache()
    app.state.feed_reader = feed_tokens.LoopReader.for_engine(hearth.db.engine)
    app.state.runs_dispatcher = runs_dispatcher
    app.state.page_limiter = WriteLimiter(hearth.clock.monotonic)
    app.state.page_cache = page.PageCache()
    return app
