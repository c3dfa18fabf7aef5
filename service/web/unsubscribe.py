"""Email one-click unsubscribe (RFC 8058): ``POST`` with ``List-Unsubscribe=One-Click``
opts the partner out of email; ``GET`` shows a small page with a confirm button (mail
scanners follow GET links, so GET alone never unsubscribes anyone)."""

from __future__ import annotations

import html

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from service.core.i18n import Lang, lang
from service.db.context import Hearth
from service.db.models import Channel, ConsentState, Partner
from service.domain import partners
from service.domain import unsubscribe as links
from service.web.page.guard import HEADERS

PAGE = """<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="/static/page.css"></head><body><main>{body}</main></body></html>"""


def _page(t: Lang, body: str) -> HTMLResponse:
    """A page in the partner's language (the token names whose page it is)."""
    return HTMLResponse(
        PAGE.format(lang=t.code, title=html.escape(t._("Hearth emails")), body=body),
        headers=HEADERS,  # the partner page's: never framed, the token never sent onwards
    )


def _p(text: str) -> str:
    return f"<p>{html.escape(text, quote=False)}</p>"


def _partner(hearth: Hearth, token: str) -> tuple[int, str, bool, str] | None:
    if not links.TOKEN_FORM.fullmatch(token):
        return None  # not one we issue: never reaches the database (NUL breaks PostgreSQL)
    with hearth.db.session() as s:
        p = links.partner_for(s, token)
        if p is None:
            return None
        return p.id, p.name, p.email_opted_out_at is not None, p.language


def _opt_out(hearth: Hearth, partner_id: int) -> None:
    with hearth.db.session(immediate=True) as s:
        p = s.get(Partner, partner_id)
        if p is not None and p.email_opted_out_at is None:
            partners.set_consent(
                s,
                hearth.clock.now(),
                p,
                ConsentState.OPTED_OUT,
                "email unsubscribe",
                channel=Channel.EMAIL,
            )


async def unsubscribe(request: Request) -> Response:
    hearth: Hearth = request.app.state.hearth
    found = await run_in_threadpool(_partner, hearth, request.path_params["token"])
    if found is None:
        raise HTTPException(404)  # the app's one 404: no hint whether the token existed
    partner_id, name, already, language = found
    t = lang(language)
    if request.method == "POST":
        # RFC 8058: the one-click POST carries List-Unsubscribe=One-Click, form-encoded or
        # multipart (so the raw body is checked rather than parsed as one encoding).
        form = await request.body()  # at most limits.FORM_BODY (service/web/limits.py)
        if b"List-Unsubscribe" not in form or b"One-Click" not in form:
            return PlainTextResponse(
                "expected List-Unsubscribe=One-Click\n", status_code=400, headers=HEADERS
            )
        await run_in_threadpool(_opt_out, hearth, partner_id)
        return _page(t, _p(t._("You will get no more emails from Hearth.")))
    if already:
        return _page(t, _p(t._("You are already unsubscribed.")))
    question = t._("Stop Hearth's reminder emails for {name}?").format(name=name)
    button = t._("Unsubscribe")
    body = (
        f"<p>{html.escape(question, quote=False)}</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        f'<button type="submit">{html.escape(button)}</button></form>'
    )
    return _page(t, body)


routes: list[BaseRoute] = [
    Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
]
