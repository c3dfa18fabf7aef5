"""Twilio webhooks: ``POST /twilio/inbound`` (replies) and ``POST /twilio/status`` (receipts).

Both verify ``X-Twilio-Signature`` with the twilio library's ``RequestValidator`` against the
configured public base URL, so they work behind a reverse proxy that rewrites host or scheme:
a missing or wrong signature gets 403 and nothing is recorded. A body that is not a strict
UTF-8 form (or holds NUL) gets 400, before any database access; one larger than 64 KiB never
gets here (413 from service/web/limits.py).
"""

from __future__ import annotations

import random
import urllib.parse
from xml.sax.saxutils import escape

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from twilio.request_validator import RequestValidator

from service.core.metrics import WEBHOOKS, observe_receipt
from service.db.context import Hearth
from service.outbox import backoff, receipts
from service.replies import inbound

log = structlog.get_logger("hearth.twilio")
TWIML = "application/xml"
MAX_SID = 120  # the width of the provider_message_id columns; Twilio's SIDs are 34
_RNG = random.Random()  # backoff jitter for receipts that ask for a resend


def twiml(text: str | None) -> Response:
    inner = f"<Message>{escape(text)}</Message>" if text else ""
    return Response(
        f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>', media_type=TWIML
    )


def _parse_form(body: bytes) -> dict[str, str] | None:
    """Strict ``application/x-www-form-urlencoded``: ASCII on the wire, UTF-8 once decoded, no
    NUL (PostgreSQL cannot store it). None when the body is not that."""
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("ascii"), keep_blank_values=True, errors="strict", max_num_fields=200
        )
    except ValueError:  # UnicodeDecodeError included; also too many fields
        return None
    params = dict(pairs)
    if any("\x00" in k or "\x00" in v for k, v in params.items()):
        return None
    return params


async def _verified_form(request: Request, endpoint: str) -> dict[str, str] | Response:
    hearth: Hearth = request.app.state.hearth
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        WEBHOOKS.labels(endpoint=endpoint, outcome="bad_request").inc()
        return PlainTextResponse("expected a form-encoded body\n", status_code=400)
    body = await request.body()  # at most limits.MAX_BODY: larger is 413 (service/web/limits.py)
    params = _parse_form(body)
    if params is None:
        WEBHOOKS.labels(endpoint=endpoint, outcome="bad_request").inc()
        return PlainTextResponse("malformed form body\n", status_code=400)
    token = hearth.settings.twilio.auth_token.get_secret_value()
    url = hearth.settings.web.public_base_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("x-twilio-signature", "")
    if not token or not signature or not RequestValidator(token).validate(url, params, signature):
        WEBHOOKS.labels(endpoint=endpoint, outcome="forbidden").inc()
        log.warning("webhook_signature_rejected", endpoint=endpoint)
        return PlainTextResponse("invalid signature\n", status_code=403)
    return params


async def inbound_sms(request: Request) -> Response:
    params = await _verified_form(request, "inbound")
    if isinstance(params, Response):
        return params
    sender, body, sid = params.get("From"), params.get("Body"), params.get("MessageSid")
    if not sender or body is None or not sid or len(sid) > MAX_SID:
        WEBHOOKS.labels(endpoint="inbound", outcome="bad_request").inc()
        return PlainTextResponse("From, Body and MessageSid are required\n", status_code=400)
    hearth: Hearth = request.app.state.hearth
    answer, known = await run_in_threadpool(_handle_inbound, hearth, sender, body, sid)
    WEBHOOKS.labels(endpoint="inbound", outcome="ok" if known else "unknown_sender").inc()
    return twiml(answer)


def _handle_inbound(hearth: Hearth, sender: str, body: str, sid: str) -> tuple[str | None, bool]:
    with hearth.db.session(immediate=True) as s:
        partner = inbound.find_partner(s, sender)
        if partner is None:
            # Two digits are enough to tell numbers apart in an incident, and identify nobody.
            log.info("reply_from_unknown_number", sender_ends=sender[-2:])
            return None, False
        return inbound.handle(hearth, s, hearth.clock.now(), partner, body, sid), True


async def status_callback(request: Request) -> Response:
    params = await _verified_form(request, "status")
    if isinstance(params, Response):
        return params
    sid, status = params.get("MessageSid"), (params.get("MessageStatus") or "").lower()
    if not sid or not status or len(sid) > MAX_SID:
        WEBHOOKS.labels(endpoint="status", outcome="bad_request").inc()
        return PlainTextResponse(
            f"MessageSid (at most {MAX_SID} characters) and MessageStatus are required\n",
            status_code=400,
        )
    hearth: Hearth = request.app.state.hearth
    outcome = await run_in_threadpool(_apply_status, hearth, sid, status, params.get("ErrorCode"))
    WEBHOOKS.labels(endpoint="status", outcome=outcome).inc()
    observe_receipt(status, outcome)  # a final receipt that changed the row: an outcome too
    return Response(status_code=204)


def _apply_status(hearth: Hearth, sid: str, status: str, error: str | None) -> str:
    with hearth.db.session(immediate=True) as s:
        return receipts.apply(
            s.connection(),
            sid,
            status,
            error,
            hearth.clock.now(),
            backoff.policy(hearth.settings.daemon, _RNG),
        )


routes: list[BaseRoute] = [
    Route("/twilio/inbound", inbound_sms, methods=["POST"]),
    Route("/twilio/status", status_callback, methods=["POST"]),
]
