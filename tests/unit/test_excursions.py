"""A level shift stays actionable while it lasts, even after the scorer has started to get used to it."""

from __future__ import annotations

from dataclasses import dataclass

from sequestra.scoring.combiner import CombinerConfig, WorkloadScorer
from sequestra.scoring.excursions import ExcursionTracker
from sequestra.scoring.series import ScorerConfig


@dataclass(frozen=True)
class Point:
    name: str
    score: float | None
    deviation: float | None


def test_an_excursion_persists_while_the_deviation_stays_and_closes_when_it_falls() -> None:
    tracker = ExcursionTracker(threshold=0.6, persistence=3)
    assert tracker.update(0, [Point("rate", 0.9, 50.0)]) == []
    assert tracker.update(5, [Point("rate", 0.1, 40.0)]) == []
    sustained = tracker.update(10, [Point("rate", 0.0, 30.0)])
    assert [name for name, _ in sustained] == ["rate"] and sustained[0][1].opened_at == 0
    assert tracker.update(15, [Point("rate", None, None)])  # unknown changes nothing
    assert tracker.update(20, [Point("rate", 0.0, 10.0)]) == []  # fell below a quarter: over


def test_a_single_spike_never_persists() -> None:
    tracker = ExcursionTracker(threshold=0.6, persistence=2)
    tracker.update(0, [Point("cpu", 0.95, 8.0)])
    assert tracker.update(5, [Point("cpu", 0.0, 0.2)]) == []
    assert tracker.update(10, [Point("cpu", 0.0, 0.1)]) == []


def test_a_noiseless_level_shift_is_held_by_the_tracker_though_the_scores_fade() -> None:
    config = CombinerConfig(threshold=0.6, release_threshold=0.45, persistence=2,
                            directions={"executors": ("up",)}, scorer=ScorerConfig(warmup_points=12))
    scorer, tracker = WorkloadScorer(config), ExcursionTracker(threshold=0.6, persistence=2)
    for t in range(40):
        scorer.observe(t * 5.0, {"executors": 6.0})
    held = []
    for t in range(40, 48):
        verdict = scorer.observe(t * 5.0, {"executors": 40.0})
        held.append(bool(tracker.update(t * 5.0, verdict.signals)))
    assert held[1:] == [True] * 7, held
