"""The partner page's safeguards and rendering: security headers and
the Jinja2 environment (templates and stylesheet ship as package data).

Templates say everything the page says through ``_()`` (Jinja2's i18n extension), in the
partner's language: one environment per language, each with that language's catalog
installed (service/core/i18n.py), so a render never depends on another request's language.
Dates and times come from the template's ``t`` (the partner's :class:`~service.core.i18n.Lang`,
CLDR formats).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2
from starlette.responses import HTMLResponse

from service.core import i18n

# No script at all; styles and images only from the page's own origin (the QR and chart are
# inline SVG, part of the document); forms post only back to it; never framed.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never send it onwards
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
}
# The write limit lives in service/web/limiter.py, the body limit in service/web/limits.py.


@cache
def _env(language: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("service.web", "templates"),
        autoescape=jinja2.select_autoescape(("html",)),
        extensions=["jinja2.ext.i18n"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(  # type: ignore[attr-defined]
        i18n.translations(language), newstyle=True
    )
    return env


def render(
    template: str, language: str | None = None, status: int = 200, **context: Any
) -> HTMLResponse:
    """``template`` in ``language`` (a partner's stored code; unknown or none: English)."""
    t = i18n.lang(language)
    body = _env(t.code).get_template(template).render(t=t, languages=i18n.NAMES, **context)
    return HTMLResponse(body, status_code=status, headers=HEADERS)
