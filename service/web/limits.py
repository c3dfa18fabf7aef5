"""One request-body limit for the whole app, enforced while reading.

:class:`BodyLimit` wraps the app: a declared ``Content-Length`` above the route's limit is
answered 413 before a byte of the body is read; a chunked body is read up to the limit and
answered 413 the moment it passes it, else handed on as read. No handler can therefore see,
or make the server buffer, more than its limit, whether or not it reads the body at all, and
before any token is checked. The limits are per path prefix; everything else gets
:data:`MAX_BODY`, which the proxy configurations in deploy/ set too.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.replies.question import MAX_ANSWER

# The largest body any route takes: a Twilio webhook is a few kB (an SMS is at most 1600
# characters), so 64 KiB leaves room. deploy/nginx.conf and deploy/Caddyfile say the same.
MAX_BODY = 64 * 1024
# The partner page's forms and the email buttons are a few short fields.
FORM_BODY = 4096
# The page's answer box: an answer of MAX_ANSWER characters, each up to 4 UTF-8 bytes sent as
# %XX, and the form's other fields.
ANSWER_BODY = MAX_ANSWER * 12 + 1024
ROUTE_LIMITS: dict[str, int] = {
    "/page/": FORM_BODY,
    "/unsubscribe/": FORM_BODY,
    "/twilio/": MAX_BODY,
}
TOO_LARGE = b"request body too large\n"


def limit_for(path: str) -> int:
    if path.startswith("/page/") and path.endswith("/answer"):
        return ANSWER_BODY
    return next((n for prefix, n in ROUTE_LIMITS.items() if path.startswith(prefix)), MAX_BODY)


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is None and not chunked:
            await self.app(scope, receive, send)  # no body at all (RFC 9112 6.3)
            return
        limit = limit_for(scope["path"])
        if declared is not None:
            # uvicorn's h11 has checked it is a number and delivers no more than it says.
            if not declared.isdigit() or int(declared) > limit:
                await _too_large(send)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away: let the app see it
            size += len(message.get("body", b""))
            if size > limit:
                await _too_large(send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return message

        await self.app(scope, replay, send)


async def _too_large(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(TOO_LARGE)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": TOO_LARGE})
