"""``/page/{token}``: a partner's own page, and its forms.

``GET`` shows the page; each form ``POST``s to ``/page/{token}/{action}``, and a write that
succeeds redirects back (POST-redirect-GET, ``?done=`` naming what happened). A refused
form answers 4xx with the page and the service's one-line message beside the form, and the
transaction rolled back. Unknown and rotated tokens, and every other path under ``/page``,
get the app's one 404, exactly like a feed. ``/page/from-email/{grant}`` is the emails'
footer link (service/domain/grants.py): a button there, behind CSRF and the rate limit,
spends the single-use grant on a fresh page link (a GET alone never does, as mail scanners
follow links).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import available_timezones

import structlog
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from service.core.exceptions import HearthError
from service.core.metrics import PAGE_REQUESTS
from service.db.context import Hearth
from service.domain import grants
from service.web.limiter import WriteLimiter
from service.web.page import actions as page_actions
from service.web.page import tokens as page_tokens
from service.web.page import view as partner_page
from service.web.page.guard import HEADERS, render

log = structlog.get_logger("hearth.page")
DONE_CODES = frozenset(
    {
        "paused",
        "resumed",
        "skipped",
        "repair",
        "saved",
        "resubscribed",
        "feed",
        "link",
        "answered",
        "forgotten",
    }
)
MAX_PAST_PAGE = 10_000  # "our questions" pages: any number past the last is just empty
_TOKEN_FORM = page_tokens.well_formed


def _count(kind: str, outcome: str) -> None:
    PAGE_REQUESTS.labels(kind=kind, outcome=outcome).inc()


def _view(hearth: Hearth, token: str, past: int = 1) -> partner_page.View | None:
    with hearth.db.session() as s:
        partner = partner_page.load(s, token)
        if partner is None:
            return None
        grace, web, now = hearth.settings.replies.grace, hearth.settings.web, hearth.clock.now()
        return partner_page.build(s, partner, now, web, grace, hearth.keys, past)


def page_context(view: partner_page.View, token: str, **extra: Any) -> dict[str, Any]:
    return {
        "v": view,
        "base": f"{page_tokens.PATH}{token}",
        "csrf": page_tokens.csrf(token),
        "done": None,
        "error": None,
        "error_form": None,
        "error_code": None,
        "error_field": None,
        "form": {},
        "zones": ZONE_OPTIONS,
        **extra,
    }


class PageCache:
    """The last rendered page per token, reused while nothing it shows has changed.

    Keyed by what :func:`partner_page.stamp` reads (the partner row, the couple's change
    stamp, its latest check-in and repair request) and the minute, since the next reminders
    move on with the clock: a page is at most a minute behind the time, never behind a
    write. Only the plain page is kept (not one answering a form), in process memory like the
    feed cache, at most ``size`` pages, the least recently shown dropped first."""

    def __init__(self, size: int = 512) -> None:
        self._lock = threading.Lock()
        self._size = size
        self._items: OrderedDict[str, tuple[tuple[object, ...], bytes]] = OrderedDict()

    def get(self, digest: str, key: tuple[object, ...]) -> bytes | None:
        with self._lock:
            item = self._items.get(digest)
            if item is None or item[0] != key:
                return None
            self._items.move_to_end(digest)
            return item[1]

    def put(self, digest: str, key: tuple[object, ...], body: bytes) -> None:
        with self._lock:
            self._items[digest] = (key, body)
            self._items.move_to_end(digest)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


def _cached(hearth: Hearth, cache: PageCache, token: str) -> tuple[object, ...] | bytes | None:
    """The cached body if still right; else the key to store a new one under (None: 404)."""
    found = partner_page.stamp(hearth.db.engine, token)
    if found is None:
        return None
    key = (*found, hearth.clock.now().replace(second=0, microsecond=0))
    return cache.get(page_tokens.digest(token), key) or key


async def show(request: Request) -> Response:
    hearth: Hearth = request.app.state.hearth
    cache: PageCache = request.app.state.page_cache
    token = request.path_params["token"]
    query = request.query_params if request.scope["query_string"] else None
    done = query.get("done") if query else None
    past = _past_page(query.get("past", "") if query else "")
    key: tuple[object, ...] | None = None
    if done is None and past == 1:
        found = await run_in_threadpool(_cached, hearth, cache, token)
        if found is None:
            _count("view", "not_found")
            raise HTTPException(404)  # the app's one 404 (service.web)
        if isinstance(found, bytes):
            _count("view", "ok")
            return HTMLResponse(found, headers=HEADERS)
        key = found
    view = await run_in_threadpool(_view, hearth, token, past)
    if view is None:
        _count("view", "not_found")
        raise HTTPException(404)
    _count("view", "ok")
    page = render(
        "page.html",
        view.language,
        **page_context(view, token, done=done if done in DONE_CODES else None),
    )
    if key is not None:
        cache.put(page_tokens.digest(token), key, bytes(page.body))
    return page


def _zone_options() -> Markup:
    """Every IANA zone a partner may pick, as ``<option>``s for the zone field's datalist
    (a searchable list without script); built once, the same for every page."""
    names = sorted(z for z in available_timezones() if "/" in z and not z.startswith(_NOT_PLACES))
    return Markup("".join(f'<option value="{escape(z)}">' for z in names))


_NOT_PLACES = ("Etc/", "SystemV/", "US/", "posix/", "right/")
ZONE_OPTIONS = _zone_options()
# The form field a refused action's error belongs to (the service names it its own way).
_FIELDS = (("quiet", "quiet_hours"), ("zone", "timezone"), ("language", "language"))


def _field(action: str, named: str) -> str | None:
    """The page's field to focus for an error the service raised about ``named``."""
    if action in ("answer", "pause"):
        return "answer" if action == "answer" else "until"
    if action == "settings":
        return next((f for key, f in _FIELDS if key in named), None)
    return None


def _past_page(raw: str) -> int:
    """The page of "our questions" asked for; anything that is no page number: the first."""
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= MAX_PAST_PAGE else 1


def _write(hearth: Hearth, token: str, action: str, form: dict[str, str]) -> page_actions.Done:
    """Run one action in one transaction; a HearthError rolls it back and propagates."""
    with hearth.db.session(immediate=True) as s:
        partner = partner_page.load(s, token)
        if partner is None:
            raise LookupError(token)
        if action in page_actions.HEARTH_ACTIONS:
            act = page_actions.HEARTH_ACTIONS[action]
            return act(hearth, s, hearth.clock.now(), partner, token, form)
        return page_actions.ACTIONS[action](s, hearth.clock.now(), partner, token, form)


async def write(request: Request) -> Response:
    state = request.app.state
    hearth: Hearth = state.hearth
    token, action = request.path_params["token"], request.path_params["action"]
    known = action in page_actions.ACTIONS or action in page_actions.HEARTH_ACTIONS
    if not known or not _TOKEN_FORM(token):
        _count("write", "not_found")
        raise HTTPException(404)
    # The token's hash looked up before the limiter counts it: invented tokens never take a
    # place in it (service/web/limiter.py).
    if await run_in_threadpool(partner_page.stamp, hearth.db.engine, token) is None:
        _count("write", "not_found")
        raise HTTPException(404)
    limiter: WriteLimiter = state.page_limiter
    if not limiter.allow(page_tokens.digest(token)):
        return await _refuse(hearth, token, action, {}, 429, "rate_limited", None)
    body = await request.body()  # at most limits.limit_for(path) (service/web/limits.py)
    form = dict(parse_qsl(body.decode("utf-8", "replace")))
    if not page_tokens.csrf_ok(token, form.get("csrf", "")):
        return await _refuse(hearth, token, action, form, 403, "csrf", None)
    try:
        done = await run_in_threadpool(_write, hearth, token, action, form)
    except LookupError:
        _count("write", "not_found")
        raise HTTPException(404) from None
    except HearthError as exc:
        field = _field(action, getattr(exc, "field", ""))
        return await _refuse(hearth, token, action, form, 400, "refused", str(exc), field)
    _count("write", "ok")
    log.info("page_write", action=action, outcome="ok")
    if done.feed is not None:
        return await _feed_once(hearth, token, done.feed)
    target = f"{page_tokens.PATH}{done.token or token}?done={done.code}"
    return RedirectResponse(target, status_code=303, headers=HEADERS)


async def _refuse(
    hearth: Hearth,
    token: str,
    action: str,
    form: dict[str, str],
    status: int,
    outcome: str,
    message: str | None,
    field: str | None = None,
) -> Response:
    """The page again, the form's error beside it; a 404 if the token is not (or no longer)
    a page's, so a refusal never tells a stranger more than the 404 does."""
    view = await run_in_threadpool(_view, hearth, token)
    if view is None:
        _count("write", "not_found")
        raise HTTPException(404)
    _count("write", outcome)
    log.info("page_write", action=action, outcome=outcome)
    form.pop("csrf", None)
    ctx = page_context(
        view,
        token,
        error=message,
        error_code=outcome,
        error_form=action,
        error_field=field,
        form=form,
    )
    return render("page.html", view.language, status=status, **ctx)


async def _feed_once(hearth: Hearth, token: str, feed: str) -> Response:
    """The page with a new feed token that could not be kept (no encryption keys): this
    answer is the one time it can be shown, so no redirect (and it is never cached)."""
    view = await run_in_threadpool(_view, hearth, token)
    if view is None:
        raise HTTPException(404)
    shown = partner_page.subscribe(hearth.settings.web, feed, view.couple_name)
    view = dataclasses.replace(view, feed=shown)
    return render("page.html", view.language, **page_context(view, token, done="feed"))


def _by_grant(hearth: Hearth, grant: str, issue: bool) -> tuple[str, str] | None:
    """The partner's name and language (GET), or a new page token for them (POST), which
    spends the grant: issuing a page token drops all of the partner's grants."""
    if not grants.well_formed(grant):
        return None  # not one we issue: never reaches the database
    with hearth.db.session(immediate=issue) as s:
        now = hearth.clock.now()
        p = grants.spend(s, grant, now) if issue else grants.find(s, grant, now)
        if p is None:
            return None
        if issue:
            return page_tokens.issue(s, now, p, hearth.keys), p.language
        return p.name, p.language


async def from_email(request: Request) -> Response:
    hearth: Hearth = request.app.state.hearth
    grant = request.path_params["token"]
    post = request.method == "POST"
    found = await run_in_threadpool(_by_grant, hearth, grant, False)
    if found is None:
        _count("write" if post else "view", "not_found")
        raise HTTPException(404)
    if not post:
        _count("view", "ok")
        return render("from_email.html", found[1], name=found[0], csrf=grants.csrf(grant))
    limiter: WriteLimiter = request.app.state.page_limiter
    if not limiter.allow("grant:" + grants.digest(grant)):
        _count("write", "rate_limited")
        return Response("too many requests\n", status_code=429, headers=HEADERS)
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    if form.get("open") != "1" or not grants.csrf_ok(grant, form.get("csrf", "")):
        _count("write", "csrf")
        return Response("expected open=1 and the form's csrf\n", status_code=403, headers=HEADERS)
    issued = await run_in_threadpool(_by_grant, hearth, grant, True)
    if issued is None:  # spent or revoked meanwhile
        _count("write", "not_found")
        raise HTTPException(404)
    _count("write", "ok")
    return RedirectResponse(f"{page_tokens.PATH}{issued[0]}", status_code=303, headers=HEADERS)


async def no_page(request: Request) -> Response:
    _count("view" if request.method in ("GET", "HEAD") else "write", "not_found")
    raise HTTPException(404)


routes: list[BaseRoute] = [
    Route("/page/from-email/{token}", from_email, methods=["GET", "HEAD", "POST"]),
    Route("/page/{token}", show, methods=["GET", "HEAD"]),
    Route("/page/{token}/{action}", write, methods=["POST"]),
    Route("/page{rest:path}", no_page, methods=["GET", "HEAD", "POST"]),
]


_CSS = (files("service.web") / "static" / "page.css").read_bytes()


async def stylesheet(request: Request) -> Response:
    return Response(
        _CSS,
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


routes.insert(0, Route("/static/page.css", stylesheet, methods=["GET", "HEAD"]))
