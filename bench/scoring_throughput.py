"""Scoring throughput: points per second per core and memory per series, for 1k, 10k and 100k series.

Each size is fed `intervals` rounds of one point per series through one ScoreBook (the batch path the
operator uses for many series), after a warm-up round. CPU time is the process's own (user + system),
so the figure is per core whatever else runs on the machine. The goal: 100k series at a 15 s interval
(6 667 points/s) on well under one core.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from sequestra.scoring import ScoreBook, SeriesScorer

INTERVAL_S = 15.0
GOAL_SERIES = 100_000
GOAL_POINTS_PER_S = GOAL_SERIES / INTERVAL_S


@dataclass(frozen=True)
class SizeFigures:
    series: int
    intervals: int
    cpu_s: float
    bytes_per_series: float

    @property
    def points_per_cpu_s(self) -> float:
        return self.series * self.intervals / self.cpu_s

    @property
    def cpu_s_per_point(self) -> float:
        return self.cpu_s / (self.series * self.intervals)

    @property
    def cores_at_15s(self) -> float:
        """Cores busy scoring `series` series every 15 s."""
        return self.series / INTERVAL_S / self.points_per_cpu_s


@dataclass(frozen=True)
class ThroughputResult:
    sizes: list[SizeFigures]
    single_points_per_cpu_s: float  # one SeriesScorer, point by point (the backtest and per-workload path)

    @property
    def met_goals(self) -> bool:
        biggest = max(self.sizes, key=lambda s: s.series)
        return biggest.series < GOAL_SERIES or biggest.cores_at_15s < 0.5

    def lines(self) -> list[str]:
        rows = ["## scoring throughput (ScoreBook batch path, one process)",
                "| series | intervals | points/s per core | µs CPU per point | cores at a 15 s interval | "
                "memory per series |",
                "|---|---|---|---|---|---|"]
        rows += [f"| {s.series:,} | {s.intervals} | {s.points_per_cpu_s:,.0f} | {s.cpu_s_per_point * 1e6:.2f} "
                 f"| {s.cores_at_15s:.3f} | {s.bytes_per_series:,.0f} B |" for s in self.sizes]
        base = min(self.sizes, key=lambda s: s.series)
        rows.append("cost per point relative to the smallest size (1.00 = linear): " + ", ".join(
            f"{s.series:,}: {s.cpu_s_per_point / base.cpu_s_per_point:.2f}" for s in self.sizes))
        rows.append(f"one SeriesScorer point by point: {self.single_points_per_cpu_s:,.0f} points/s per core")
        biggest = max(self.sizes, key=lambda s: s.series)
        if biggest.series >= GOAL_SERIES:
            rows.append(f"goal: {GOAL_SERIES:,} series at 15 s ({GOAL_POINTS_PER_S:,.0f} points/s) on well under "
                        f"one core: {biggest.cores_at_15s:.3f} cores (ratio to 0.5 core: "
                        f"{biggest.cores_at_15s / 0.5:.2f})")
        return rows


def measure(series: int, intervals: int, seed: int = 0) -> SizeFigures:
    rng = np.random.default_rng(seed)
    book = ScoreBook(series)
    level = rng.uniform(10, 1e6, series)
    # Realistic enough inputs: noisy levels, a few missing values and spikes each round.
    rounds = [level * (1 + rng.normal(0, 0.05, series)) for _ in range(8)]
    for r in rounds:
        r[rng.integers(0, series, max(series // 1000, 1))] = np.nan
        r[rng.integers(0, series, max(series // 1000, 1))] *= 10
    book.update(0.0, rounds[0])
    began = time.process_time()
    for i in range(intervals):
        book.update((i + 1) * INTERVAL_S, rounds[i % len(rounds)])
    cpu = time.process_time() - began
    return SizeFigures(series, intervals, cpu, book.nbytes / series)


def measure_single(points: int = 20_000) -> float:
    rng = np.random.default_rng(1)
    values = 100 + rng.normal(0, 5, points)
    scorer = SeriesScorer()
    began = time.process_time()
    for i, v in enumerate(values):
        scorer.update(i * INTERVAL_S, float(v))
    return points / (time.process_time() - began)


def run(quick: bool = False) -> ThroughputResult:
    plan = [(1_000, 300), (10_000, 200)] + ([] if quick else [(100_000, 100)])
    return ThroughputResult([measure(n, k) for n, k in plan], measure_single())


if __name__ == "__main__":
    import sys

    print("\n".join(run(quick="--quick" in sys.argv[1:]).lines()))
