"""Sustained excursions: a level shift stays an incident while the signal stays away from its baseline.

A series scorer judges each point by how rare its deviation is in the series' own recent history; after
a level shift the first points are rare, and then the shift itself fills that history and the scores
fall, although the workload is exactly as far from normal as before (a producer that went from 40 KB/s
to 2 MB/s and stays there). For acting, what matters is that the excursion persists: it opens on a point
scored at or above the threshold and lasts while the deviation keeps the same sign and at least half its
opening size; it closes when the deviation falls below a quarter of it. Unknown points change nothing.
Pure and per workload; the loop keeps one tracker per workload.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol


class ScoredSignal(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def score(self) -> float | None: ...
    @property
    def deviation(self) -> float | None: ...


@dataclass
class Excursion:
    opened_at: float
    opening_deviation: float
    intervals: int = 1


@dataclass
class ExcursionTracker:
    threshold: float
    persistence: int
    open: dict[str, Excursion] = field(default_factory=dict)

    def update(self, timestamp: float, signals: Iterable[ScoredSignal]) -> list[tuple[str, Excursion]]:
        """Advance by one interval; returns the excursions that have persisted long enough to act on,
        longest-running first."""
        for signal in signals:
            score, deviation = signal.score, signal.deviation
            if score is None or deviation is None:
                continue  # unknown: neither opens, extends nor closes
            current = self.open.get(signal.name)
            if current is None:
                if score >= self.threshold and deviation != 0:
                    self.open[signal.name] = Excursion(timestamp, deviation)
                continue
            same_side = (deviation > 0) == (current.opening_deviation > 0)
            size = abs(deviation) / abs(current.opening_deviation)
            if same_side and size >= 0.5:
                current.intervals += 1
            elif not same_side or size < 0.25:
                del self.open[signal.name]
        sustained = [(name, e) for name, e in self.open.items() if e.intervals >= self.persistence]
        return sorted(sustained, key=lambda item: item[1].opened_at)
