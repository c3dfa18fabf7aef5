from __future__ import annotations

import itertools
import json
import random

import pytest

from service.core.clock import FakeClock
from service.db.engine import Database
from service.db.models import Prompt, RitualKind
from service.domain import prompts
from tests.conftest import Cli, snapshot
from tests.factories import add_ritual, couple_with_partners


@pytest.mark.parametrize("kind", list(RitualKind))
def test_every_kind_has_at_least_15_distinct_short_prompts(kind: RitualKind) -> None:
    pool = prompts.builtin_pool(kind)
    assert len(pool) >= 15
    assert len(set(pool)) == len(pool)
    assert all(3 <= len(p) <= prompts.MAX_LENGTH for p in pool)


def test_rotation_shows_the_whole_pool_before_repeating(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    rid = add_ritual(db, now, couple_with_partners(db, now), "five-minute-check-in")
    rng = random.Random(3)
    with db.session() as s:
        from service.db.models import Ritual

        ritual = s.get(Ritual, rid)
        assert ritual is not None
        size = len(prompts.builtin_pool(RitualKind.CHECK_IN))
        cycles = []
        for _ in range(3):
            shown = []
            for _ in range(size):
                p = prompts.next_prompt(s, ritual, now, rng)
                assert p is not None
                shown.append(p.id)
            cycles.append(shown)
    for shown in cycles:
        assert len(set(shown)) == size  # every prompt once per cycle
    for before, after in itertools.pairwise(cycles):
        assert before[-1] != after[0]  # never the same prompt twice in a row
    assert cycles[0] != cycles[1]  # and not the same order every time


def test_disabled_prompts_are_never_chosen(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    rid = add_ritual(db, now, couple_with_partners(db, now), "gratitude-three")
    with db.session() as s:
        from service.db.models import Ritual

        prompts.sync_builtin(s, now)
        pool = prompts.enabled_ids(s, RitualKind.GRATITUDE)
        for pid in pool[1:]:
            prompts.set_enabled(s, now, pid, False)
        ritual = s.get(Ritual, rid)
        assert ritual is not None
        chosen = {prompts.next_prompt(s, ritual, now).id for _ in range(5)}  # type: ignore[union-attr]
    assert chosen == {pool[0]}


def test_prompts_cli(run: Cli, db: Database) -> None:
    listed = json.loads(run.ok("prompts", "list", "--kind", "repair", "--json").output)
    assert len(listed) == len(prompts.builtin_pool(RitualKind.REPAIR))
    out = run.ok("prompts", "add", "--kind", "check_in", "What made you smile?").output
    pid = int(out.split()[2])
    assert "What made you smile?" in run.ok("prompts", "list", "--kind", "check_in").output
    run.ok("prompts", "disable", str(pid))
    assert "What made you smile?" not in run.ok("prompts", "list").output
    before = snapshot(db)
    for args, message in [
        (("prompts", "add", "--kind", "nope", "x y z"), "kind:"),
        (("prompts", "add", "--kind", "custom", "x" * 141), "prompt: must be 3 to 140"),
        (("prompts", "disable", str(pid)), "already disabled"),
        (("prompts", "disable", "99999"), "prompt 99999 not found"),
    ]:
        result = run(*args)
        assert result.exit_code == 2 and message in result.output, result.output
    assert snapshot(db) == before
    with db.session() as s:
        assert s.get(Prompt, pid) is not None
