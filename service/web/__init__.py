"""The Starlette app: feeds, Twilio webhooks, unsubscribe, health and metrics.

Each concern is one module exposing ``routes``; :func:`create_app` mounts them all. Handlers
reach the service context through ``request.app.state.hearth``.
"""

from __future__ import annotations

from starlette.applications import Starlette

from service.app import Hearth
from service.web import feeds, health, twilio, unsubscribe


def create_app(hearth: Hearth) -> Starlette:
    app = Starlette(
        routes=[*health.routes, *feeds.routes, *twilio.routes, *unsubscribe.routes],
    )
    app.state.hearth = hearth
    return app
