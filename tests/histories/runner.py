"""Running histories: the CI profile ``make test`` uses and the long run ``make simulate``
prints.

A failing history is shrunk by Hypothesis and reported as the steps that reproduce it; the
long run then goes on with fresh histories, so one run reports every distinct failure it
meets (up to ``max_failures``).
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.histories.machine import machine_for
from tests.histories.world import World

CHECKS = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
# make test: a fixed, derandomized set of histories, the same on every run. 150 per database
# keeps both under two minutes of wall time on two cores; make simulate runs the long tail.
CI = settings(
    max_examples=150,
    stateful_step_count=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=CHECKS,
    print_blob=False,
)
# make simulate: fresh random histories, longer ones.
SIMULATE = settings(
    CI,
    stateful_step_count=25,
    derandomize=False,
    print_blob=True,
)


@dataclass
class Run:
    backend: str
    histories: int = 0
    steps: int = 0
    seconds: float = 0.0
    failed_passes: int = 0
    failures: list[str] = field(default_factory=list)

    @classmethod
    def merged(cls, runs: list[Run]) -> Run:
        """Several processes' runs on one backend as one (the longest one's time)."""
        return cls(
            runs[0].backend,
            sum(r.histories for r in runs),
            sum(r.steps for r in runs),
            max(r.seconds for r in runs),
            sum(r.failed_passes for r in runs),
            [f for r in runs for f in r.failures],
        )

    def summary(self) -> str:
        lines = [
            f"{self.backend}: {self.histories} histories, {self.steps} steps in "
            f"{self.seconds:.1f} s ({self.failed_passes} worker passes failed on purpose); "
            f"{len(self.failures)} failing histories"
        ]
        for i, failure in enumerate(self.failures, 1):
            lines.append(f"--- failing history {i} (shrunk) ---\n{failure}")
        return "\n".join(lines)


def run(
    world: World,
    histories: int,
    profile: settings,
    max_failures: int = 10,
    on_failure: Callable[[str], None] | None = None,
) -> Run:
    """Run about ``histories`` histories (shrinking counts too) on ``world``;
    ``on_failure`` is told each failing history, shrunk, as soon as it is."""
    result = Run(world.backend)
    machine = machine_for(world)
    start = time.perf_counter()
    before = world.histories, world.steps, world.failed_passes
    while world.histories - before[0] < histories and len(result.failures) < max_failures:
        left = histories - (world.histories - before[0])
        chosen = settings(profile, max_examples=left)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                run_state_machine_as_test(machine, settings=chosen)
        except Exception as exc:  # a broken promise, shrunk: report it and go on
            steps = _steps(out.getvalue())
            result.failures.append(f"{steps}{_describe(exc)}")
            if on_failure is not None:
                on_failure(result.failures[-1])
            if profile.derandomize:
                break  # the same seed would find the same history again
    result.seconds = time.perf_counter() - start
    result.histories = world.histories - before[0]
    result.steps = world.steps - before[1]
    result.failed_passes = world.failed_passes - before[2]
    return result


def _describe(exc: BaseException) -> str:
    """The error with its notes; a flaky failure (a race that did not replay) with the
    errors each run met."""
    notes = "".join(f"{n}\n" for n in getattr(exc, "__notes__", []))
    text = f"{notes}{type(exc).__name__}: {exc}"
    if isinstance(exc, BaseExceptionGroup):
        text += "".join(f"\n  - {_describe(sub)}" for sub in exc.exceptions)
    return text


def _steps(printed: str) -> str:
    """Hypothesis' report of the shrunk history, without the log lines around it."""
    start = printed.find("Falsifying example")
    if start < 0:
        start = printed.find("state = ")
    if start < 0:
        return ""  # the steps are in the error's notes (and the rest is log lines)
    lines = printed[start:].splitlines()
    return "\n".join(line for line in lines if not line.startswith("20")) + "\n"


__all__ = ["CI", "SIMULATE", "Run", "run"]
