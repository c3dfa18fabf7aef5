"""``GET``/``HEAD /feeds/{token}.ics``: a partner's subscription to the couple's rituals.

Conditional requests are answered from a cache keyed by couple and alarms flag and validated by
the couple's change stamp: an unchanged couple gets its 304 without building the calendar.
Unknown, rotated and malformed tokens, and every other path under ``/feeds``, all get the
app's one 404 (``service.web``), so a response never tells whether a token ever existed.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Literal, NamedTuple

import sqlalchemy as sa
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.calendar import feed_tokens, feeds
from service.calendar.feed_tokens import AsyncReader, LoopReader, Stamp
from service.core.metrics import FEED_BUILDS, FEED_REQUESTS
from service.core.timeutil import http_date
from service.db.context import Hearth
from service.db.models import Couple, Partner

# A few threads, not the shared pool of 40: lookups are short and hold the GIL, and a burst of
# polls spread over many threads spends more time switching than answering (bench/feeds.py).
FEED_THREADS = 4
# A plain executor rather than anyio's worker threads: its hand-off costs about half as much,
# and on a 304 the hand-off is a large share of the work (docs/performance.md). One per
# process, shared by every app instance.
_POOL = ThreadPoolExecutor(FEED_THREADS, thread_name_prefix="hearth-feed")
_YES = ("1", "true", "yes")
# Bound once: looking a label up on every request costs as much as the rest of a 304's headers.
_COUNT = {status: FEED_REQUESTS.labels(status=status) for status in ("200", "304", "404")}


class Key(NamedTuple):
    couple_id: int
    born: object  # see feed_tokens.Stamp: tells a removed couple from the next with its id
    stamp: int  # the couple's change stamp the build was made from
    alarms: bool
    day: date  # the body depends on "now" only to the day (feeds.build_calendar)
    language: str  # the token holder's: partners of one couple may read two languages


class Built(NamedTuple):
    key: Key
    etag: str
    last_modified: datetime
    body: bytes
    headers: dict[str, str]  # of every answer from this build, formatted once


class FeedCache:
    """The last build per (couple, alarms flag, language): partners of one couple may
    subscribe with and without alarms, and read different languages; one slot per couple
    would make them evict each other on every poll. Small (at most four entries per couple)
    and thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[int, bool, str], Built] = {}

    def get(self, key: Key) -> Built | None:
        with self._lock:
            item = self._items.get((key.couple_id, key.alarms, key.language))
        return item if item is not None and item.key == key else None

    def put(self, item: Built) -> None:
        with self._lock:
            self._items[(item.key.couple_id, item.key.alarms, item.key.language)] = item


def _lookup(hearth: Hearth, token: str, alarms: bool, cache: FeedCache) -> Built | None:
    """The feed for ``token``, from the cache or built, on a feed thread."""
    now = hearth.clock.now()
    # Read here even when the loop has just read it (LoopReader): a request may wait for a
    # feed thread, and meanwhile the token may be rotated or its couple removed.
    found = feed_tokens.couple_stamp(hearth.db.engine, token)
    if found is None:
        return None
    cached = cache.get(_key(found, alarms, now))
    if cached is not None:
        return cached
    with hearth.db.session() as s:
        # Through the token again, in the session the calendar is built from: a couple
        # removed since the first read, and a new one given its id, never get mixed up.
        row = s.execute(
            sa.select(Couple, Partner.language)
            .join(Partner, Partner.couple_id == Couple.id)
            .where(Partner.feed_token_hash == feed_tokens.digest(token))
        ).first()
        if row is None or row[0].id != found.couple_id:
            return None
        couple, language = row
        # Key the build by the stamp it was built from, which may be newer than the first read.
        key = Key(couple.id, found.born, couple.change_stamp, alarms, now.date(), language)
        item = _build(s, couple, key, now, hearth)
    cache.put(item)
    return item


def _key(found: Stamp, alarms: bool, now: datetime) -> Key:
    return Key(found.couple_id, found.born, found.change_stamp, alarms, now.date(), found.language)


def _build(s: sa.orm.Session, couple: Couple, key: Key, now: datetime, hearth: Hearth) -> Built:
    FEED_BUILDS.inc()
    rituals = feeds.feed_rituals(s, couple)
    body = feeds.build_calendar(
        couple,
        rituals,
        now=now,
        alarms=key.alarms,
        refresh_hours=hearth.settings.web.feed_refresh_hours,
        language=key.language,
    )
    # A body that depends on the date changes without the couple changing; Last-Modified
    # must move with it, or an If-Modified-Since client keeps a stale copy.
    modified = couple.updated_at
    floor = feeds.date_floor(couple, rituals, now)
    if floor is not None and floor > modified:
        modified = floor
    etag = feeds.etag(body)
    headers = {
        "ETag": etag,
        "Last-Modified": format_datetime(modified.astimezone(UTC), usegmt=True),
        "Cache-Control": f"private, max-age={hearth.settings.web.feed_max_age_seconds}",
    }
    return Built(key, etag, modified, body, headers)


def _not_modified(request: Request, item: Built) -> bool:
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return item.etag in tags or "*" in tags
    ims = request.headers.get("if-modified-since")
    # RFC 9110 13.1.3: ignore a value that is not one HTTP-date. Each of its three forms has
    # at most one comma, so more means a list.
    if not ims or ims.count(",") > 1:
        return False
    since = http_date(ims)
    return since is not None and item.last_modified.replace(microsecond=0) <= since


async def feed(request: Request) -> Response:
    state = request.app.state
    token = request.path_params["token"]
    # Calendar apps poll without a query string: parse one only when there is one.
    alarms = bool(request.scope["query_string"]) and request.query_params.get("alarms") in _YES
    item = await _find(state.hearth, state.feed_cache, state.feed_reader, token, alarms)
    if item is None:
        _COUNT["404"].inc()
        raise HTTPException(404)  # the app's one 404 (service.web)
    if _not_modified(request, item):
        _COUNT["304"].inc()
        return Response(status_code=304, headers=item.headers)
    _COUNT["200"].inc()
    # For HEAD the server sends the headers (Content-Length included) and drops the body.
    return Response(item.body, media_type="text/calendar; charset=utf-8", headers=item.headers)


async def _find(
    hearth: Hearth,
    cache: FeedCache,
    reader: LoopReader | AsyncReader | None,
    token: str,
    alarms: bool,
) -> Built | None:
    """A cache hit answered on the event loop (LoopReader on SQLite, AsyncReader's pool on
    PostgreSQL), so an unchanged couple costs no thread hand-off; anything else goes to the
    feed threads."""
    if reader is None:
        found: Stamp | Literal[False] | None = False
    elif isinstance(reader, AsyncReader):
        found = await reader.stamp(token)
    else:
        found = reader.stamp(token)
    if found is None:
        return None
    if found is not False:
        item = cache.get(_key(found, alarms, hearth.clock.now()))
        if item is not None:
            return item
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_POOL, _lookup, hearth, token, alarms, cache)


async def no_feed(request: Request) -> Response:
    """Any other path under /feeds (no ``.ics``, ``.ICS``, a trailing slash, more segments):
    matched here so that the router neither redirects it (a 307 to the path without the
    slash would say the rest of the URL is right) nor answers differently from a bad token."""
    _COUNT["404"].inc()
    raise HTTPException(404)


routes: list[BaseRoute] = [
    Route("/feeds/{token}.ics", feed, methods=["GET", "HEAD"]),
    Route("/feeds{rest:path}", no_feed, methods=["GET", "HEAD"]),
]
