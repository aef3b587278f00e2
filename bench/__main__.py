"""Run every benchmark and print its figures (and ratios to the goals) for the docs.

    python -m bench            # all: sandbox start, operator at 1k and at 10k pods
    python -m bench --quick    # sandbox start and operator at 1k pods
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Protocol

from bench import operator_scale, sandbox_start


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
    failed = False
    for run in runs:
        result = run()
        print("\n".join(result.lines()), flush=True)
        failed |= not result.met_goals
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
