"""Generated histories in `make test`: a fixed set of histories per database (the CI profile
of tests/histories/runner.py), every promise checked after every step against what the
Twilio stand-in and the SMTP sink accepted. `make simulate` runs many more."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import require_postgres
from tests.histories import runner
from tests.histories.world import World


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    if request.param == "postgres":
        require_postgres()
    w = World(request.param)
    yield w
    w.close()


def test_generated_histories_keep_every_promise(world: World) -> None:
    result = runner.run(world, runner.CI.max_examples, runner.CI)
    print(result.summary())
    assert result.histories >= runner.CI.max_examples
    assert not result.failures, result.summary()
