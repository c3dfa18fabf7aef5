"""Generated histories in `make test`: a fixed set of histories per database (the CI profile
of tests/histories/runner.py), every promise checked after every step against what the
Twilio stand-in and the SMTP sink accepted. `make simulate` runs many more."""

from __future__ import annotations

from tests.histories import runner
from tests.histories.world import World


def test_generated_histories_keep_every_promise(world: World) -> None:
    result = runner.run(world, runner.CI.max_examples, runner.CI)
    print(result.summary())
    assert result.histories >= runner.CI.max_examples
    assert not result.failures, result.summary()
