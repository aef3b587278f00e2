"""One verdict per workload from its named signals: hysteresis, cooldown, direction and an explanation.

The workload's score is the highest score among its signals that moved in a direction the config counts.
It turns "anomalous" only after staying at or above `threshold` for `persistence` consecutive intervals,
stays so until it falls below `release_threshold`, and after an episode a new one cannot start for
`cooldown` intervals. A signal without data is unknown: it never raises the score, and a workload whose
signals are all unknown is "unknown" (never anomalous), so a scrape outage is not an incident.

Evidence-only signals are scored the same way (so an incident's evidence has their baseline, ratio and
deviation) but never move the verdict: they are what runbooks read, not what the policy counts. A signal
whose baseline is below its floor moved "from 0" (`scoring/baselines.py`), and its explanation says so
instead of quoting a deviation in units of an error scale that is zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, model_validator

from sequestra.model.sequestration import CamelModel
from sequestra.scoring.baselines import DEFAULT_FLOOR, moved
from sequestra.scoring.series import PointScore, ScorerConfig, SeriesScorer

Direction = Literal["up", "down"]
State = Literal["unknown", "normal", "anomalous"]
BOTH: tuple[Direction, ...] = ("up", "down")


class CombinerConfig(CamelModel):
    threshold: float = Field(default=0.5, gt=0, le=1, description="score at or above counts toward an episode")
    release_threshold: float = Field(default=0.35, ge=0, lt=1, description="an episode ends below this score")
    persistence: int = Field(default=3, ge=1, description="consecutive intervals at/above threshold to start")
    cooldown: int = Field(default=5, ge=0, description="intervals after an episode before another can start")
    directions: dict[str, tuple[Direction, ...]] = Field(
        default_factory=dict, description="per signal, the directions that count (default both)")
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="per signal, its own threshold in place of `threshold` (0-1]")
    floors: dict[str, float] = Field(
        default_factory=dict, description="per signal, the smallest level that means anything (below: zero)")
    evidence_only: frozenset[str] = Field(
        default_factory=frozenset, description="signals scored for the evidence that never move the verdict")
    scorer: ScorerConfig = Field(default_factory=ScorerConfig)

    @model_validator(mode="after")
    def _consistent(self) -> CombinerConfig:
        if self.release_threshold > self.threshold:
            raise ValueError(f"releaseThreshold ({self.release_threshold}) must not exceed "
                             f"threshold ({self.threshold})")
        for name, directions in self.directions.items():
            if not directions:
                raise ValueError(f"directions for signal {name!r} is empty; give 'up', 'down' or both")
        return self

    def counts(self, signal: str, direction: Direction) -> bool:
        return direction in self.directions.get(signal, BOTH)

    def on_common_scale(self, signal: str, score: float) -> float:
        """A signal with its own threshold is scored on the common scale: reaching its threshold is reaching
        `threshold`, so one combined score and one episode rule serve signals tuned apart."""
        own = self.thresholds.get(signal)
        return score if own is None else min(1.0, score * self.threshold / own)


@dataclass(frozen=True)
class SignalExplanation:
    name: str
    score: float | None  # 0 when the signal moved in a direction that does not count; None = no data
    baseline: float | None
    value: float | None
    deviation: float | None
    since: float | None  # epoch seconds when this signal's excursion began
    direction: Direction | None
    from_zero: bool = False  # the baseline was below the signal's floor and the value is not

    def describe(self) -> str:
        if self.score is None:
            return f"{self.name}: no data"
        if self.from_zero:
            # An error scale learnt from zeros is zero: "1e12x its usual error" would be true and useless.
            since = f", since {_time(self.since)}" if self.since is not None else ""
            return (f"{self.name} {self.direction or 'up'} from 0 to {_num(self.value)} (baseline "
                    f"{_num(self.baseline)}: nothing usual to compare with, score {self.score:.2f}{since})")
        move = f"{self.direction} {abs(self.deviation or 0.0):.1f}x its usual error"
        numbers = f"{_num(self.value)} vs baseline {_num(self.baseline)}"
        since = f", since {_time(self.since)}" if self.since is not None else ""
        return f"{self.name} {move} ({numbers}, score {self.score:.2f}{since})"


@dataclass(frozen=True)
class WorkloadVerdict:
    state: State
    score: float | None
    since: float | None  # epoch seconds when the current anomalous episode began
    signals: tuple[SignalExplanation, ...]  # most anomalous first, signals without data last
    # Signals still away from their baseline in a sustained excursion (scoring/excursions.py): what keeps a
    # level shift anomalous after the scorer has begun to learn it, and scores it low.
    sustained: tuple[str, ...] = ()

    def explain(self) -> str:
        """One line for humans: which signals moved, how far from baseline, since when."""
        if self.state == "unknown":
            missing = ", ".join(s.name for s in self.signals) or "no signals"
            return f"unknown: no data from {missing}"
        moved = [s for s in self.signals if s.score is not None and (s.score > 0 or s.name in self.sustained)]
        head = (f"anomalous since {_time(self.since)}" if self.state == "anomalous" else "normal")
        head += f" (score {self.score:.2f})"
        if not moved:
            return f"{head}: every signal within its usual range"
        shown = moved if self.state == "anomalous" else moved[:1]
        tail = "; ".join(s.describe() + (", still away from its baseline: a sustained excursion"
                                         if s.name in self.sustained else "") for s in shown)
        # Only signals that had data and lost it: one the workload never had (a Spark signal of a Kafka
        # producer) says nothing about it.
        absent = [s.name for s in self.signals if s.score is None and s.baseline is not None]
        if absent:
            tail += f"; no data from {', '.join(absent)}"
        return f"{head}: {tail}"


class WorkloadScorer:
    """Scores one workload's signals each interval and keeps its episode state (hysteresis, cooldown)."""

    def __init__(self, config: CombinerConfig | None = None) -> None:
        self.config = config or CombinerConfig()
        self._series: dict[str, SeriesScorer] = {}
        self._above = 0
        self._first_above: float | None = None
        self._episode_since: float | None = None
        self._cooldown_left = 0

    def warm(self, signal: str, points: Iterable[tuple[float, float | None]]) -> None:
        """Feed a signal's history (oldest first) before the first `observe`, e.g. a Prometheus range query."""
        self._scorer(signal).warm(points)

    def observe(self, timestamp: float, values: Mapping[str, float | None]) -> WorkloadVerdict:
        """Score this interval's values; signals seen before but absent now count as missing."""
        for name in values:
            self._scorer(name)
        explained = [self._explain(name, scorer.update(timestamp, values.get(name)))
                     for name, scorer in self._series.items()]
        explained.sort(key=lambda s: (s.score is None, -(s.score or 0.0), s.name))
        known = [s.score for s in explained if s.score is not None and s.name not in self.config.evidence_only]
        score = max(known) if known else None
        state = self._step(timestamp, score)
        since = self._episode_since if state == "anomalous" else None
        return WorkloadVerdict(state, score, since, tuple(explained))

    def _scorer(self, name: str) -> SeriesScorer:
        if name not in self._series:
            self._series[name] = SeriesScorer(self.config.scorer)
        return self._series[name]

    def _explain(self, name: str, point: PointScore) -> SignalExplanation:
        direction: Direction | None = None
        if point.deviation is not None and point.deviation != 0:
            direction = "up" if point.deviation > 0 else "down"
        score, since = point.score, point.anomalous_since
        if score is not None and (name in self.config.evidence_only or (
                direction is not None and not self.config.counts(name, direction))):
            score, since = 0.0, None
        elif score is not None:
            score = self.config.on_common_scale(name, score)
        from_zero = moved(point.value, point.baseline, self.config.floors.get(name, DEFAULT_FLOOR)).from_zero
        return SignalExplanation(name, score, point.baseline, point.value, point.deviation, since, direction,
                                 from_zero)

    def _step(self, timestamp: float, score: float | None) -> State:
        cfg = self.config
        if score is None:
            # No data: neither progress toward an episode nor the end of one; the outage is not evidence.
            self._above, self._first_above = 0, None
            return "unknown"
        if self._episode_since is not None:
            if score >= cfg.release_threshold:
                return "anomalous"
            self._episode_since = None
            self._cooldown_left = cfg.cooldown
            return "normal"
        if self._cooldown_left > 0:
            self._cooldown_left -= 1
            return "normal"
        if score < cfg.threshold:
            self._above, self._first_above = 0, None
            return "normal"
        self._above += 1
        if self._first_above is None:
            self._first_above = timestamp
        if self._above < cfg.persistence:
            return "normal"
        self._episode_since = self._first_above
        self._above, self._first_above = 0, None
        return "anomalous"


def explain_history(history: Mapping[str, Sequence[tuple[float, float]]],
                    config: CombinerConfig) -> tuple[SignalExplanation, ...]:
    """Each signal's explanation at its last point, scored against the points before it (oldest first):
    the evidence of a signal that is read once, when an incident opens, instead of every interval."""
    explained: list[SignalExplanation] = []
    for name, points in sorted(history.items()):
        if not points:
            continue
        scorer = WorkloadScorer(config)
        scorer.warm(name, points[:-1])
        explained += scorer.observe(points[-1][0], {name: points[-1][1]}).signals
    return tuple(explained)


def _num(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:.3g}" if abs(x) < 1e5 else f"{x:.3e}"


def _time(ts: float | None) -> str:
    if ts is None:
        return "?"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
