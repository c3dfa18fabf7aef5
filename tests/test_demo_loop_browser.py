"""Issue 24's promise, end to end: right after what `make run` does in a fresh directory, with
the console channel, both demo partners answer tonight's question on the pages `hearth demo`
printed, and each sees the other's answer only once both have.

`make run`'s own recipe (read from the Makefile, as the README tour's test does) sets the
directory up; the daemon it would then exec is stood in for by its parts on a fake clock: the
planner at the moment the demo was made, the real dispatcher once the nudge is due, and the
real app under uvicorn. No real time passes, so the demo's "a minute from now" costs nothing.
"""

from __future__ import annotations

import io
import os
import random
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from service.channels.console import ConsoleTransport
from service.core.clock import FakeClock
from service.core.config import load_settings
from service.db.context import Hearth
from service.db.engine import Database
from service.db.models import Channel, Reminder, Ritual
from service.outbox import planner
from service.outbox.dispatcher import Dispatcher
from tests.browser import PHONE, Tab, axe_serious
from tests.test_readme_tour import _run_each, _skipped, make_run_steps
from tests.web import serve

ALEX_SAYS = "The dog stealing my sandwich"
SAM_SAYS = "Your impression of the weather forecaster"
# What `hearth demo` prints: the question, and one page link per partner.
QUESTION_LINE = re.compile(r"^tonight's question for both: (.+)$", re.MULTILINE)
PAGE_LINE = re.compile(r"^  (Alex|Sam): (http://\S+?)(/page/\S+)$", re.MULTILINE)


def _environ() -> dict[str, str]:
    """The environment as a new user's shell has it: no HEARTH_* settings of the test run."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HEARTH_")}
    env.pop("VIRTUAL_ENV", None)
    return env


def _make_run(repo_root: Path, where: Path) -> tuple[str, dict[str, str], str]:
    """Run `make run`'s steps but the daemon in ``where``: tonight's question, each
    partner's page path and the base URL `hearth demo` printed them under."""
    venv = Path(sys.prefix)
    (where / ".venv").symlink_to(venv)
    steps = make_run_steps((repo_root / "Makefile").read_text(encoding="utf-8"))
    setup = [s for s in steps if not _skipped(s)]
    ran = _run_each(setup, where, _environ())
    for command, rc, out in ran:
        assert rc == 0, f"make run's {command!r} exited {rc}:\n{out}"
    demo_out = next(out for command, _, out in ran if command.endswith("hearth demo"))
    question = QUESTION_LINE.search(demo_out)
    links = PAGE_LINE.findall(demo_out)
    assert question and [who for who, _, _ in links] == ["Alex", "Sam"], demo_out
    assert len({base for _, base, _ in links}) == 1, demo_out
    return question.group(1), {who: path for who, _, path in links}, links[0][1]


def _nudge_sent(hearth: Hearth, clock: FakeClock, hello: int) -> tuple[datetime, list[str]]:
    """What the daemon does for the demo: plan (the clock stands at the moment the demo was
    made), then, just after the demo nudge is due, one dispatcher pass over console
    transports. The hello's start, and every message the console printed (heading first)."""
    daemon = hearth.settings.daemon
    planner.plan(
        hearth.db,
        clock.now(),
        timedelta(hours=daemon.horizon_hours),
        daemon.stale_after_minutes,
        quiet_early=timedelta(hours=daemon.quiet_early_hours),
        fallback_after=timedelta(seconds=hearth.settings.delivery.fallback_after_seconds),
    )
    with hearth.db.session() as s:
        due, start = s.execute(
            sa.select(sa.func.min(Reminder.due_at), sa.func.min(Reminder.occurrence_start)).where(
                Reminder.ritual_id == hello
            )
        ).one()
    assert due is not None and due > clock.now()  # planned ahead, as the demo says
    clock.set(due + timedelta(seconds=30))
    streams = {ch: io.StringIO() for ch in Channel}
    Dispatcher(
        hearth, {ch: ConsoleTransport(ch, streams[ch]) for ch in Channel}, rng=random.Random(1)
    ).run_once()
    return start, [m for st in streams.values() for m in st.getvalue().split("--- ")[1:]]


def _clean(tab: Tab, state: str) -> None:
    assert axe_serious(tab.page) == [], state


def test_the_demo_partners_answer_on_their_printed_pages_and_see_each_other_only_after_both(
    repo_root: Path, tmp_path: Path, chromium: Any
) -> None:
    question, paths, printed_base = _make_run(repo_root, tmp_path)
    # The daemon's Hearth: make run's config as the CLI loads it, on a clock of our own.
    settings = load_settings(tmp_path / "hearth.toml", environ=_environ())
    assert (settings.channels.sms, settings.channels.email) == ("console", "console")
    assert settings.web.public_base_url == printed_base
    # The URL is relative to the directory make run ran in; the test runs elsewhere.
    assert settings.database.url == "sqlite:///hearth.db"
    db = Database(f"sqlite:///{tmp_path / 'hearth.db'}")
    try:
        with db.session() as s:
            hello = s.scalars(sa.select(Ritual).where(Ritual.title == "Hello from Hearth")).one()
            clock = FakeClock(hello.created_at)
            hearth = Hearth(settings, db, clock)
            hello_id = hello.id
        start, printed = _nudge_sent(hearth, clock, hello_id)
        # The console printed the demo nudge once to each partner: Sam's email asks the
        # question, Alex's discreet text names only the time (starter rituals may be due in
        # the same minute, so the hello's are told apart by what they say).
        local = start.astimezone(ZoneInfo(settings.defaults.timezone))
        at = f"at {local:%I:%M}".replace("at 0", "at ")
        to_alex = [m for m in printed if m.startswith("sms to +14155550123\n") and at in m]
        to_sam = [
            m
            for m in printed
            if m.startswith("email to sam@example.org |") and "Hello from Hearth" in m
        ]
        assert len(to_alex) == 1 and len(to_sam) == 1, printed
        assert "/page/" in to_alex[0] and question in to_sam[0]
        _both_answer(hearth, paths, question, chromium)
    finally:
        db.dispose()


def _both_answer(hearth: Hearth, paths: dict[str, str], question: str, chromium: Any) -> None:
    alex, sam = Tab(chromium, PHONE), Tab(chromium, PHONE)
    try:
        with serve(hearth) as base:
            alex.page.goto(base + paths["Alex"])
            assert alex.page.inner_text("#asked") == question
            _clean(alex, "question open")
            alex.page.fill("#answer", ALEX_SAYS)
            alex.page.click("#send-answer")
            assert alex.page.url.endswith("?done=answered")
            sam.page.goto(base + paths["Sam"])
            assert sam.page.inner_text("#asked") == question  # the same question for both
            assert ALEX_SAYS not in sam.page.content()  # not before Sam answered
            sam.page.fill("#answer", SAM_SAYS)
            sam.page.click("#send-answer")
            assert sam.page.locator("blockquote.theirs").inner_text() == ALEX_SAYS
            _clean(sam, "revealed")
            alex.page.reload()
            assert alex.page.locator("blockquote.theirs").inner_text() == SAM_SAYS
            assert alex.page.locator("#my-answer").inner_text() == ALEX_SAYS
            _clean(alex, "revealed")
        assert alex.errors + sam.errors == []
    finally:
        alex.close()
        sam.close()
