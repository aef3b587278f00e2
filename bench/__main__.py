"""Run every benchmark and print its figures (and ratios to the goals) for the docs.

    python -m bench            # all: sandbox start, operator at 1k and at 10k pods, 30 policies' sampling, NAB,
                               # scoring at 1k-100k series,
                               # the incident gauntlet (docs/GAUNTLET.md) and the sandbox's language model
                               # qualified on the eval suite (docs/QUALIFICATION.md)
    python -m bench --quick    # sandbox start, operator at 1k pods, NAB (batch path), scoring at 1k-10k series
    (both also time containment of a producer flood: 10 runs, 3 with --quick)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Protocol

from bench import (
    gauntlet,
    model_qualification,
    nab,
    operator_scale,
    policy_sampling,
    sandbox_start,
    scoring_throughput,
    time_to_contain,
)


class Result(Protocol):
    @property
    def met_goals(self) -> bool: ...

    def lines(self) -> list[str]: ...


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    runs: list[Callable[[], Result]] = [
        sandbox_start.run,
        lambda: operator_scale.run(deployments=500, pods_per=2, sequestrations=200),
    ]
    if not quick:
        runs.append(lambda: operator_scale.run(deployments=500, pods_per=20, sequestrations=200))
    # 30 policies' intervals together: Prometheus queries per interval with a sampler each, and shared (~2 min).
    runs.append(lambda: policy_sampling.run(policies=30, intervals=3 if quick else 6))
    # Flood -> quota measured effective at the broker, with the real operator (~2 min a run).
    runs.append(lambda: time_to_contain.run(runs=3 if quick else 10))
    if not quick:
        runs.append(gauntlet.run)  # every gauntlet scenario against the real operator: ~6 min (docs/GAUNTLET.md)
    # Scoring needs no sandbox. Full: NAB through `sequestra score` itself and up to 100k series; quick:
    # NAB through the same scorer's batch path (same scores, faster) and up to 10k series.
    runs.append(lambda: nab.run(through_cli=not quick))
    runs.append(lambda: scoring_throughput.run(quick=quick))
    if not quick:
        runs.append(model_qualification.run)  # every scenario through the real model: 15-40 min
    failed = False
    for run in runs:
        result = run()
        print("\n".join(result.lines()), flush=True)
        failed |= not result.met_goals
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
