"""Generated histories at length: ``make simulate`` runs 10,000 (by default) on SQLite and on
PostgreSQL (tests/histories/), each checked after every step against what the Twilio
stand-in and the SMTP sink accepted, and prints how many histories and steps ran, the run
time, and every failing history shrunk to the steps that reproduce it. Exit status 1 when
any history failed.

    python -m bench.simulate [--histories 10000] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import structlog

from tests.histories import runner
from tests.histories.world import World


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=10_000, help="in all, split evenly")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--max-failures", type=int, default=10, help="per backend")
    args = parser.parse_args(argv)
    # The worker's log lines are not the report: only warnings and errors reach stderr.
    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    each = max(1, args.histories // len(backends))
    started = time.perf_counter()
    failed = 0
    histories = steps = 0
    for backend in backends:
        world = World(backend)
        try:
            result = runner.run(world, each, runner.SIMULATE, args.max_failures)
        finally:
            world.close()
        print(result.summary(), flush=True)
        failed += len(result.failures)
        histories += result.histories
        steps += result.steps
    total = time.perf_counter() - started
    print(
        f"in all: {histories} histories, {steps} steps in {total:.1f} s; {failed} failing histories"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
