"""Run every benchmark and print its figures (and ratios to the goals) for the docs."""

from __future__ import annotations

import sys

from bench import sandbox_start


def main() -> int:
    results = [sandbox_start.run()]
    failed = False
    for result in results:
        for line in result.lines():
            print(line)
        failed |= not result.met_goals
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
