"""Liveness: ``/healthz`` answers 200 while the database answers, 503 otherwise."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from service.exceptions import DatabaseUnavailable


async def healthz(request: Request) -> Response:
    hearth = request.app.state.hearth
    try:
        hearth.db.check()
    except DatabaseUnavailable:
        return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET", "HEAD"])]
