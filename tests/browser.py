"""Headless Chromium from Debian's packages, driven by Playwright (it cannot download a
browser of its own here). Missing browser: a skip on a developer's machine, a failure under
``CI=true`` (``make test`` installs it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("HEARTH_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}
IN_CI = os.environ.get("CI", "").lower() == "true"


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true requires the browser: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        _missing(f"playwright is not installed: {exc}")
        raise
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


# Chromium logs every 4xx/5xx answer to the console; the tests mean those (a refused form,
# a rotated link) and check their status themselves. Every other error counts, among them
# a CSP violation ("Refused to ...") and any uncaught exception.
_HTTP_STATUS = "Failed to load resource: the server responded with a status of "


class Tab:
    """A page that records every console error and uncaught exception it sees."""

    def __init__(self, browser: Any, viewport: dict[str, int]) -> None:
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _console(self, message: Any) -> None:
        if message.type == "error" and not message.text.startswith(_HTTP_STATUS):
            self.errors.append(message.text)

    def close(self) -> None:
        self.context.close()


AXE = Path(__file__).resolve().parent / "js" / "node_modules" / "axe-core" / "axe.min.js"
_SERIOUS = """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
  .filter(v => v.impact === "serious" || v.impact === "critical")
  .map(v => v.id + ": " + v.nodes.map(n => n.target.join(" ")).join(", "))"""


def axe_serious(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now. The script goes
    in through the DevTools protocol, which the page's CSP (no script at all) does not
    govern; the page itself stays script-free."""
    if not AXE.exists():
        _missing(f"{AXE} is missing (cd tests/js && npm ci)")
    page.evaluate(AXE.read_text(encoding="utf-8"))
    return list(page.evaluate(_SERIOUS))


def shoot(page: Any, name: str) -> None:
    """Write the screenshot into docs/ when asked (SCREENSHOTS=1), as the README's
    pictures are made; otherwise only check that one can be taken."""
    if os.environ.get("SCREENSHOTS") == "1":
        docs = Path(__file__).resolve().parent.parent / "docs"
        page.screenshot(path=str(docs / name), full_page=True)
    else:
        assert page.screenshot(full_page=True)
