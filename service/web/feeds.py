"""``GET``/``HEAD /feeds/{token}.ics``: a partner's subscription to the couple's rituals.

Conditional requests are answered from a per-couple cache keyed by the couple's change stamp:
an unchanged couple gets its 304 without building the calendar. Unknown, rotated and malformed
tokens all get the same 404, so a response never tells whether a token ever existed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date, datetime
from email.utils import format_datetime, parsedate_to_datetime

import anyio
import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.orm import selectinload
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from service import feed_tokens, feeds
from service.app import Hearth
from service.metrics import FEED_REQUESTS
from service.models import Couple, Ritual

# A few threads, not the shared pool of 40: lookups are short and hold the GIL, and a burst of
# polls spread over many threads spends more time switching than answering (bench/feeds.py).
FEED_THREADS = 4
NOT_FOUND = PlainTextResponse("Not Found\n", status_code=404)


@dataclass(frozen=True)
class _Built:
    key: tuple[int, int, bool, date]
    etag: str
    last_modified: datetime
    body: bytes


class FeedCache:
    """The last build per couple; small (one entry per couple), thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, _Built] = {}

    def get(self, key: tuple[int, int, bool, date]) -> _Built | None:
        with self._lock:
            item = self._items.get(key[0])
        return item if item is not None and item.key == key else None

    def put(self, item: _Built) -> None:
        with self._lock:
            self._items[item.key[0]] = item


def _lookup(hearth: Hearth, token: str, alarms: bool, cache: FeedCache) -> _Built | None:
    now = hearth.clock.now()
    # Most requests are a calendar app polling an unchanged couple: one indexed Core query
    # decides that, and only a miss opens a session and builds.
    with hearth.db.read() as conn:
        found = feed_tokens.couple_stamp(conn, token)
    if found is None:
        return None
    # The body depends on "now" only through open-ended pauses, at day granularity.
    key = (*found, alarms, now.date())
    cached = cache.get(key)
    if cached is not None:
        return cached
    with hearth.db.session() as s:
        couple = s.get(Couple, found[0])
        if couple is None:  # removed since the first query
            return None
        # Key the build by the stamp it was built from, which may be newer than the first read.
        key = (couple.id, couple.change_stamp, alarms, now.date())
        return _build(s, couple, key, now, alarms, hearth)


def _build(
    s: sa.orm.Session,
    couple: Couple,
    key: tuple[int, int, bool, date],
    now: datetime,
    alarms: bool,
    hearth: Hearth,
) -> _Built:
    rituals = list(
        s.scalars(
            sa.select(Ritual)
            .where(Ritual.couple_id == couple.id)
            .options(selectinload(Ritual.exceptions))
            .order_by(Ritual.id)
        )
    )
    body = feeds.build_calendar(
        couple,
        rituals,
        now=now,
        alarms=alarms,
        refresh_hours=hearth.settings.web.feed_refresh_hours,
    )
    return _Built(key, feeds.etag(body), couple.updated_at, body)


def _not_modified(request: Request, item: _Built) -> bool:
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return item.etag in tags or "*" in tags
    ims = request.headers.get("if-modified-since")
    if ims:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        return item.last_modified.replace(microsecond=0) <= since
    return False


async def feed(request: Request) -> Response:
    hearth: Hearth = request.app.state.hearth
    cache: FeedCache = request.app.state.feed_cache
    token = request.path_params["token"]
    alarms = request.query_params.get("alarms") in ("1", "true", "yes")
    item = await anyio.to_thread.run_sync(
        _lookup, hearth, token, alarms, cache, limiter=request.app.state.feed_threads
    )
    if item is None:
        FEED_REQUESTS.labels(status="404").inc()
        return NOT_FOUND
    cache.put(item)
    headers = {
        "ETag": item.etag,
        "Last-Modified": format_datetime(item.last_modified, usegmt=True),
        "Cache-Control": f"private, max-age={hearth.settings.web.feed_max_age_seconds}",
    }
    if _not_modified(request, item):
        FEED_REQUESTS.labels(status="304").inc()
        return Response(status_code=304, headers=headers)
    FEED_REQUESTS.labels(status="200").inc()
    # For HEAD the server sends the headers (Content-Length included) and drops the body.
    return Response(item.body, media_type="text/calendar; charset=utf-8", headers=headers)


routes: list[BaseRoute] = [Route("/feeds/{token}.ics", feed, methods=["GET", "HEAD"])]
