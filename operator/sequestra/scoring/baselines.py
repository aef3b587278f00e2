"""How far a value moved from its baseline, as a ratio that is always defined when both are known.

A plain now/baseline breaks exactly where it matters most: a consumer group that never rebalanced and now
rebalances every minute, a workload with no OOM kills that now has three, a producer that was idle and now
floods. "From nothing to a lot" has no ratio, and treating that as "no ratio" hides the biggest moves
from every rule that reads ratios. So a baseline below the signal's floor (the smallest level that means
anything for it: one restart, one rebalance in five minutes) counts as zero, and the ratio is taken
against the floor instead, flagged `from_zero` so an explanation can say "from 0". Two zeros are a ratio
of 1: nothing moved. Pure; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_FLOOR = 1e-9  # for a signal the catalog does not know: only a true zero is zero


@dataclass(frozen=True)
class Moved:
    ratio: float | None  # now against the baseline (or the floor, from zero); None only when either is unknown
    from_zero: bool  # the baseline was below the floor and now is not


def _known(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def moved(now: float | None, baseline: float | None, floor: float = DEFAULT_FLOOR) -> Moved:
    """The ratio of `now` to `baseline`, never a division by zero: a baseline below `floor` is zero."""
    if now is None or baseline is None or not _known(now) or not _known(baseline):
        return Moved(None, False)
    floor = max(abs(floor), DEFAULT_FLOOR)
    if abs(baseline) >= floor:
        return Moved(now / baseline, False)
    if abs(now) < floor:
        return Moved(1.0, False)  # zero then, zero now: nothing moved
    return Moved(now / floor, True)
