"""The workload combiner: persistence before an episode, release below a lower level, cooldown, unknown data."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from sequestra.scoring import CombinerConfig, WorkloadScorer, WorkloadVerdict
from sequestra.scoring.combiner import SignalExplanation

STEP_S = 15.0


def _quiet(n: int, seed: int = 1) -> list[float]:
    return list(1000.0 + np.random.default_rng(seed).normal(0, 20, n))


def _warmed(config: CombinerConfig | None = None, signals: tuple[str, ...] = ("bytes_in", "requests")
            ) -> WorkloadScorer:
    scorer = WorkloadScorer(config)
    for k, name in enumerate(signals):
        scorer.warm(name, [(i * STEP_S, v) for i, v in enumerate(_quiet(300, seed=k))])
    return scorer


def _run(scorer: WorkloadScorer, start: int, rows: list[dict[str, float | None]]) -> list[WorkloadVerdict]:
    return [scorer.observe((start + i) * STEP_S, row) for i, row in enumerate(rows)]


def test_quiet_workload_stays_normal() -> None:
    scorer = _warmed()
    quiet = _quiet(400, seed=9)
    verdicts = _run(scorer, 300, [{"bytes_in": v, "requests": 1000.0 + (v - 1000.0) / 2} for v in quiet])
    assert {v.state for v in verdicts} == {"normal"}


def test_one_interval_spike_does_not_start_an_episode() -> None:
    scorer = _warmed()
    rows: list[dict[str, float | None]] = [{"bytes_in": v, "requests": 1000.0} for v in _quiet(5, seed=3)]
    rows[2]["bytes_in"] = 50_000.0
    verdicts = _run(scorer, 300, rows)
    assert verdicts[2].score is not None and verdicts[2].score >= CombinerConfig().threshold
    assert {v.state for v in verdicts} == {"normal"}


def test_sustained_flood_is_anomalous_after_persistence_with_since_at_its_start() -> None:
    scorer = _warmed(CombinerConfig(persistence=3))
    flood = [{"bytes_in": 20_000.0 + 50 * i, "requests": 1000.0} for i in range(6)]
    verdicts = _run(scorer, 300, flood)
    assert [v.state for v in verdicts[:3]] == ["normal", "normal", "anomalous"]
    assert verdicts[2].since == 300 * STEP_S
    top = verdicts[2].signals[0]
    assert top.name == "bytes_in" and top.direction == "up" and top.since == 300 * STEP_S
    line = verdicts[2].explain()
    assert "anomalous since" in line and "bytes_in up" in line and "requests" not in line


def test_episode_ends_below_release_then_cooldown_holds_off_a_new_one() -> None:
    config = CombinerConfig(persistence=2, cooldown=3)
    scorer = _warmed(config)
    flood = [{"bytes_in": 20_000.0, "requests": 1000.0} for _ in range(3)]
    assert _run(scorer, 300, flood)[-1].state == "anomalous"
    verdicts = []
    for i, v in enumerate(_quiet(40, seed=4)):
        verdicts.append(scorer.observe((303 + i) * STEP_S, {"bytes_in": v, "requests": 1000.0}))
        if verdicts[-1].state == "normal":
            break
    assert verdicts[-1].state == "normal", "the episode never ended"
    assert all(v.state == "anomalous" for v in verdicts[:-1])
    assert verdicts[-1].score is not None and verdicts[-1].score < config.release_threshold
    # A second flood right after: held off for the cooldown, then persistence applies again.
    start = 303 + len(verdicts)
    again = _run(scorer, start, [{"bytes_in": -30_000.0, "requests": 1000.0} for _ in range(10)])
    assert again[0].score is not None and again[0].score >= config.threshold
    assert [v.state for v in again[:4]] == ["normal"] * 4
    assert again[4].state == "anomalous" and again[4].since == (start + 3) * STEP_S


def test_direction_that_does_not_count_is_not_anomalous() -> None:
    config = CombinerConfig(directions={"bytes_in": ("up",)})
    scorer = _warmed(config)
    drop = _run(scorer, 300, [{"bytes_in": 0.0, "requests": 1000.0} for _ in range(5)])
    assert {v.state for v in drop} == {"normal"}
    assert drop[0].signals[0].direction == "down" or drop[0].signals[-1].direction == "down"
    assert all(s.score == 0.0 for v in drop for s in v.signals if s.name == "bytes_in")
    surge = _run(scorer, 305, [{"bytes_in": 50_000.0, "requests": 1000.0} for _ in range(5)])
    assert surge[-1].state == "anomalous"


def test_all_signals_missing_is_unknown_never_anomalous() -> None:
    scorer = _warmed()
    verdicts = _run(scorer, 300, [{"bytes_in": None, "requests": None} for _ in range(20)])
    assert {v.state for v in verdicts} == {"unknown"}
    assert all(v.score is None for v in verdicts)
    assert verdicts[0].explain() == "unknown: no data from bytes_in, requests"


def test_the_explanation_names_a_signal_that_went_missing_not_one_the_workload_never_had() -> None:
    scorer = _warmed()
    rows: list[dict[str, float | None]] = [{"bytes_in": 50_000.0, "requests": None, "spark_executors": None}
                                           for _ in range(4)]
    verdicts = _run(scorer, 300, rows)
    assert verdicts[-1].state == "anomalous"
    assert "no data from requests" in verdicts[-1].explain()
    assert "spark_executors" not in verdicts[-1].explain()


def test_a_missing_signal_never_raises_the_score() -> None:
    both, one = _warmed(), _warmed()
    rows = [{"bytes_in": v, "requests": 1000.0 + i} for i, v in enumerate(_quiet(20, seed=5))]
    with_both = _run(both, 300, rows)
    with_gap = _run(one, 300, [{"bytes_in": r["bytes_in"], "requests": None} for r in rows])
    for full, gap in zip(with_both, with_gap, strict=True):
        assert gap.score is not None and full.score is not None and gap.score <= full.score
        assert gap.signals[-1].name == "requests" and gap.signals[-1].score is None


def test_signal_absent_from_an_interval_counts_as_missing() -> None:
    scorer = _warmed()
    verdict = scorer.observe(300 * STEP_S, {"bytes_in": 1000.0})
    assert [s.name for s in verdict.signals][-1] == "requests"
    assert verdict.signals[-1].score is None


def test_outage_during_an_episode_neither_ends_nor_extends_it() -> None:
    scorer = _warmed(CombinerConfig(persistence=2))
    assert _run(scorer, 300, [{"bytes_in": 20_000.0, "requests": 1000.0}] * 2)[-1].state == "anomalous"
    gap = _run(scorer, 302, [{"bytes_in": None, "requests": None}] * 3)
    assert {v.state for v in gap} == {"unknown"}
    back = scorer.observe(305 * STEP_S, {"bytes_in": 20_000.0, "requests": 1000.0})
    assert back.state == "anomalous" and back.since == 300 * STEP_S


def test_config_refuses_release_above_threshold_and_empty_directions() -> None:
    with pytest.raises(ValidationError, match="releaseThreshold"):
        CombinerConfig(threshold=0.5, release_threshold=0.7)
    with pytest.raises(ValidationError, match="directions"):
        CombinerConfig(directions={"bytes_in": ()})


def test_a_signal_with_its_own_threshold_is_held_to_it_not_to_the_policys() -> None:
    """A policy's `signals[].threshold`: the same moderate shift is an episode for a signal tuned sensitive and
    not for one tuned strict, under the same combined threshold."""
    shift = [{"bytes_in": v + 160.0, "requests": 1000.0} for v in _quiet(12, seed=5)]

    def states(thresholds: dict[str, float]) -> set[str]:
        scorer = _warmed(CombinerConfig(threshold=0.9, release_threshold=0.5, persistence=3, thresholds=thresholds))
        return {v.state for v in _run(scorer, 300, shift)}

    sensitive, strict = states({"bytes_in": 0.5}), states({"bytes_in": 0.999999})
    assert "anomalous" in sensitive
    assert strict == {"normal"}
    assert CombinerConfig(threshold=0.9, thresholds={"x": 0.45}).on_common_scale("x", 0.45) == pytest.approx(0.9)


@pytest.mark.unit
def test_an_anomaly_kept_by_a_sustained_excursion_says_which_signal_keeps_it() -> None:
    """A level shift the scorer has learnt scores 0, but the excursion keeps the workload anomalous: its
    explanation (a hold's reason) names that signal, never "every signal within its usual range"."""
    learnt = SignalExplanation(name="kafka_producer_byte_rate", score=0.0, baseline=40e3, value=2e6,
                               deviation=6.0, since=1_763_900_000, direction="up")
    verdict = WorkloadVerdict(state="anomalous", score=0.0, since=1_763_900_000, signals=(learnt,),
                              sustained=("kafka_producer_byte_rate",))
    line = verdict.explain()
    assert "within its usual range" not in line
    assert "kafka_producer_byte_rate up 6.0x" in line and "sustained excursion" in line
