"""On PostgreSQL the feed's token lookup runs on the event loop, through psycopg's async
connection pool opened by the app's lifespan; an unchanged couple's 304 needs no thread."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from service.calendar import feed_tokens
from service.core.clock import FakeClock
from service.db.context import Hearth
from service.db.engine import Database
from service.domain import couples as couples_
from service.domain import partners, rituals
from service.web import create_app, feeds
from tests.conftest import _database, make_settings
from tests.factories import add_ritual, couple_with_partners
from tests.web import serve

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(request: pytest.FixtureRequest, _migrated: dict[str, Database]) -> Database:
    return _database("postgres", request, _migrated)


def test_a_304_on_postgres_is_answered_on_the_loop_and_sees_every_commit(
    db: Database, clock: FakeClock, hearth: Hearth, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = clock.now()
    cid = couple_with_partners(db, now)
    add_ritual(db, now, cid, "five-minute-check-in")
    with db.session() as s:
        token = feed_tokens.issue(s, now, partners.resolve(s, "Alice"))
    on = make_settings(db, web={"feed_async_lookup": True})
    hearth = Hearth(settings=on, db=db, clock=clock)
    app = create_app(hearth)
    with (
        serve(hearth, app=app, lifespan="on") as base,  # the lifespan opens the pool
        httpx.Client(base_url=base) as http,
    ):
        assert isinstance(app.state.feed_reader, feed_tokens.AsyncReader)
        first = http.get(f"/feeds/{token}.ics")
        assert first.status_code == 200  # built on a feed thread, then cached
        etag = first.headers["etag"]
        # No feed thread from here on: a 304 still comes, and a rotated token 404s at once.
        closed = ThreadPoolExecutor(1)
        closed.shutdown()
        monkeypatch.setattr(feeds, "_POOL", closed)
        again = http.get(f"/feeds/{token}.ics", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.headers["etag"] == etag
        with db.session() as s:
            rotated = feed_tokens.issue(s, clock.now(), partners.resolve(s, "Alice"))
        assert http.get(f"/feeds/{token}.ics", headers={"If-None-Match": etag}).status_code == 404
        monkeypatch.undo()
        # A change to the couple is seen on the next poll: a new build, on a feed thread.
        with db.session() as s:
            rituals.add(
                s, clock.now(), couples_.resolve(s, cid), rituals.RitualSpec(), "date-night"
            )
        changed = http.get(f"/feeds/{rotated}.ics", headers={"If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
    pool = app.state.feed_reader._pool
    assert pool is not None and pool.closed  # closed with the lifespan
