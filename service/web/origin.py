"""State-changing requests come from Hearth's own pages, as forms.

A browser names where a request comes from (``Sec-Fetch-Site``, else ``Origin``; the pages
send no referrer, so a browser's ``Origin`` on their forms is ``null``, which says nothing
and passes). A ``POST`` that a browser says came from another site is refused 403 before
anything reads its body or its token: the page's CSRF token already stops it, and this also
covers the unsubscribe button, which has none (RFC 8058's one-click POST comes from mail
software, which sends neither header, so a missing header passes). A body, if any, must be a
form: 415 otherwise. The Twilio webhooks are server-to-server and signed (service/web/twilio.py
checks its own).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
EXEMPT = ("/twilio/",)
SAME_SITE = frozenset({b"same-origin", b"none"})  # none: typed, or a bookmark
FORMS = {
    "/page/": frozenset({b"application/x-www-form-urlencoded"}),
    "/unsubscribe/": frozenset({b"application/x-www-form-urlencoded", b"multipart/form-data"}),
}
CROSS_SITE = b"cross-site request refused\n"
NOT_A_FORM = b"expected a form-encoded body\n"


class SameOrigin:
    def __init__(self, app: ASGIApp, public_base_url: str) -> None:
        self.app = app
        public = urlsplit(public_base_url)
        self.origin = f"{public.scheme}://{public.netloc}".encode()

    def _same(self, origin: bytes, host: bytes | None) -> bool:
        # Hearth's public origin, or the host the request was sent to (a direct connection).
        return origin == self.origin or (host is not None and origin.split(b"://")[-1] == host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] in SAFE or path.startswith(EXEMPT):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        site = headers.get(b"sec-fetch-site")
        origin = headers.get(b"origin")
        if site is not None:
            cross = site not in SAME_SITE
        else:  # a browser without Fetch Metadata: its Origin, where it tells one
            cross = origin not in (None, b"null") and not self._same(origin, headers.get(b"host"))
        if cross:
            await _answer(send, 403, CROSS_SITE)
            return
        forms = next((f for prefix, f in FORMS.items() if path.startswith(prefix)), None)
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
        if forms is not None and has_body and media not in forms:
            await _answer(send, 415, NOT_A_FORM)
            return
        await self.app(scope, receive, send)


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
