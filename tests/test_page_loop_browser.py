"""The couple's loop in a real browser, at 375 px and on a desktop: both partners answer
tonight's question on their own pages and each sees the other's answer only once both have;
"our questions" keeps it; a refused form shows its error where the page opens; the German
page is German down to the ritual's title; a new couple's chart is an empty state. Every
state passes axe-core with no serious or critical violation, and no JavaScript error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from service.db.context import Hearth
from service.domain import partners
from service.web.page import tokens as page_tokens
from tests.browser import DESKTOP, PHONE, Tab, axe_serious, shoot
from tests.factories import check_in_sent
from tests.page_helpers import served_page
from tests.web import serve

RIVER = "The walk by the river at dusk"
DINNER = "Cooking dinner together"
VIEWPORTS = {"phone": PHONE, "desktop": DESKTOP}


@pytest.fixture(params=list(VIEWPORTS))
def size(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tabs(chromium: Any, size: str) -> Iterator[tuple[Tab, Tab]]:
    alice, sam = Tab(chromium, VIEWPORTS[size]), Tab(chromium, VIEWPORTS[size])
    yield alice, sam
    errors = alice.errors + sam.errors
    alice.close()
    sam.close()
    assert errors == [], errors


@pytest.fixture
def pages(sqlite_hearth: Hearth) -> Iterator[tuple[str, str]]:
    """Tonight's check-in has gone out (Alice: a discreet text, Sam: an email); each has a
    page link. The two page URLs."""
    check_in_sent(sqlite_hearth)
    now = sqlite_hearth.clock.now()
    with sqlite_hearth.db.session() as s:
        keys = sqlite_hearth.keys
        links = [page_tokens.issue(s, now, partners.resolve(s, n), keys) for n in ("Alice", "Sam")]
    with serve(sqlite_hearth) as base:
        yield f"{base}/page/{links[0]}", f"{base}/page/{links[1]}"


def _clean(tab: Tab, state: str) -> None:
    assert axe_serious(tab.page) == [], state


def _in_view(tab: Tab, selector: str) -> bool:
    box = tab.page.locator(selector).bounding_box()
    height = tab.page.viewport_size["height"]
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height


def test_both_answer_on_their_pages_and_each_sees_the_other_only_after_both(
    pages: tuple[str, str], tabs: tuple[Tab, Tab], size: str
) -> None:
    alice, sam = tabs
    alice.page.goto(pages[0])
    question = alice.page.inner_text("#asked")
    assert question and _in_view(alice, "#answer")  # the question opens the page
    _clean(alice, "question open")
    alice.page.fill("#answer", RIVER)
    alice.page.click("#send-answer")
    assert alice.page.url.endswith("?done=answered")
    assert alice.page.input_value("#answer") == RIVER  # hers, to change until Sam answers
    _clean(alice, "answered, waiting")
    sam.page.goto(pages[1])
    assert sam.page.inner_text("#asked") == question  # the same question for both
    assert RIVER not in sam.page.content()  # never before both answered
    sam.page.fill("#answer", DINNER)
    sam.page.click("#send-answer")
    assert sam.page.locator("blockquote.theirs").inner_text() == RIVER
    alice.page.goto(pages[0])
    assert alice.page.locator("blockquote.theirs").inner_text() == DINNER
    assert alice.page.locator("#my-answer").inner_text() == RIVER
    _clean(alice, "revealed")
    # "Our questions" keeps it, both answers, hers first.
    past = alice.page.locator("#past article")
    assert past.count() == 1
    assert past.locator("dd").all_inner_texts() == [RIVER, DINNER]
    assert past.locator("h3").inner_text() == question
    if size == "phone":
        shoot(alice.page, "page-phone.png")
    else:
        shoot(alice.page, "page-desktop.png")
    # Forgetting her answer: gone from both pages, Sam's stays.
    alice.page.click("#forget-1")
    assert alice.page.url.endswith("?done=forgotten")
    assert alice.page.locator("#past dd").all_inner_texts() == ["(forgotten)", DINNER]
    sam.page.reload()
    assert RIVER not in sam.page.content()
    _clean(alice, "forgotten")


def test_a_refused_form_shows_its_error_where_the_page_opens_with_the_field_focused(
    pages: tuple[str, str], tabs: tuple[Tab, Tab]
) -> None:
    alice, _ = tabs
    alice.page.goto(pages[0])
    alice.page.fill("#quiet_hours", "11pm-7am")
    with alice.page.expect_navigation() as nav:
        alice.page.click("#save")
    assert nav.value is not None and nav.value.status == 400
    assert alice.page.evaluate("window.scrollY") == 0  # the page opens at the top...
    assert _in_view(alice, "#error-settings")  # ...and the error is right there
    assert "quiet hours" in alice.page.inner_text("#error-settings")
    assert alice.page.evaluate("document.activeElement.id") == "quiet_hours"
    assert alice.page.input_value("#quiet_hours") == "11pm-7am"
    _clean(alice, "error")


def test_the_german_page_is_german_down_to_the_rituals_title(
    pages: tuple[str, str], tabs: tuple[Tab, Tab]
) -> None:
    alice, _ = tabs
    alice.page.goto(pages[0])
    alice.page.select_option("#language", "de")
    alice.page.click("#save")
    assert alice.page.locator("html").get_attribute("lang") == "de"
    assert alice.page.locator("#h-question").inner_text() == "Eure Frage"
    assert alice.page.locator(".ritual h3").first.inner_text() == "Fünf-Minuten-Check-in"
    assert "Fünf-Minuten-Check-in" in alice.page.inner_text("#question")
    # The zone field offers the IANA zones to pick from, without script.
    assert alice.page.locator("#zones option[value='Europe/Berlin']").count() == 1
    _clean(alice, "German")


def test_a_new_couples_page_is_an_empty_state_that_passes_axe(
    sqlite_hearth: Hearth, chromium: Any, size: str
) -> None:
    tab = Tab(chromium, VIEWPORTS[size])
    try:
        with served_page(sqlite_hearth) as page:
            tab.page.goto(page.url)
            assert tab.page.locator("#chart-empty").is_visible()
            assert tab.page.locator("svg.chart").count() == 0
            # Subscribing, the main action, comes before everything else on a fresh page.
            assert _in_view(tab, "#sub-apple")
            # Email-only Sam is offered no quiet hours and no lock-screen choice.
            _clean(tab, "new couple")
        assert tab.errors == []
    finally:
        tab.close()
