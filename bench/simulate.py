"""Generated histories at length: ``make simulate`` runs 10,000 (by default) on SQLite and on
PostgreSQL (tests/histories/), each checked after every step against what the Twilio
stand-in and the SMTP sink accepted, and prints how many histories and steps ran, the run
time, and every failing history shrunk to the steps that reproduce it. Exit status 1 when
any history failed. The histories run in several processes at once (``--processes`` per
database, each with a world of its own).

    python -m bench.simulate [--histories 10000] [--backend sqlite|postgres|both] [--processes 2]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import structlog

from tests.histories import runner
from tests.histories.world import World


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=10_000, help="in all, split evenly")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--processes", type=int, default=2, help="per backend, each with a world of its own"
    )
    parser.add_argument("--max-failures", type=int, default=10, help="per process")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    tasks = [b for b in backends for _ in range(args.processes)]
    each = max(1, args.histories // len(tasks))
    started = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no state shared
    with ProcessPoolExecutor(len(tasks), mp_context=spawn) as pool:
        runs = list(pool.map(_run, tasks, [each] * len(tasks), [args.max_failures] * len(tasks)))
    results = [runner.Run.merged([r for r in runs if r.backend == b]) for b in backends]
    for result in results:
        print(result.summary(), flush=True)
    failed = sum(len(r.failures) for r in results)
    histories = sum(r.histories for r in results)
    steps = sum(r.steps for r in results)
    total = time.perf_counter() - started
    print(
        f"in all: {histories} histories, {steps} steps in {total:.1f} s; {failed} failing histories"
    )
    return 1 if failed else 0


def _run(backend: str, histories: int, max_failures: int) -> runner.Run:
    """Histories on one backend, in a process of its own."""
    # The worker's log lines are not the report: only warnings and errors reach stderr.
    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    world = World(backend)
    world.progress = lambda done, steps: print(
        f"{backend}: {done} histories, {steps} steps so far", file=sys.stderr, flush=True
    )
    try:
        return runner.run(world, histories, runner.SIMULATE, max_failures, on_failure=_tell)
    finally:
        world.close()


def _tell(failure: str) -> None:
    """A failing history at once, on stderr: a long run's report comes only at its end."""
    print(f"--- failing history (shrunk) ---\n{failure}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
