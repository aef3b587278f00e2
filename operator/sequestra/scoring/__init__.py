"""Anomaly scoring: pure, online and causal. Points in, scores out; no I/O.

`SeriesScorer` scores one series, `ScoreBook` many at once with the same arithmetic, `WorkloadScorer`
combines a workload's named signals into one verdict with hysteresis, cooldown and an explanation.
"""

from sequestra.scoring.combiner import CombinerConfig, SignalExplanation, WorkloadScorer, WorkloadVerdict
from sequestra.scoring.series import PointScore, ScoreBook, ScorerConfig, SeriesScorer

__all__ = [
    "CombinerConfig",
    "PointScore",
    "ScoreBook",
    "ScorerConfig",
    "SeriesScorer",
    "SignalExplanation",
    "WorkloadScorer",
    "WorkloadVerdict",
]
