"""From zero to N: a series that was 0 and now is not is anomalous, explained as "from 0", and carries a
finite ratio (against the signal's floor) that runbooks can read. Never a division by zero, never a
silently missing ratio. Also the same-time-yesterday ratio and signals scored for the evidence only."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from sequestra.controller.loop import signal_summaries
from sequestra.diagnosis import build_evidence, default_runbooks_dir, load_runbooks
from sequestra.model.workload import WorkloadRef
from sequestra.scoring.baselines import moved
from sequestra.scoring.combiner import CombinerConfig, WorkloadScorer, WorkloadVerdict, explain_history
from sequestra.scoring.series import ScorerConfig
from sequestra.signals.catalog import floors

WORKLOAD = WorkloadRef("shop", "Deployment", "billing")
RUNBOOKS = {r.name: r for r in load_runbooks(default_runbooks_dir())}
STEP_S = 15.0


def _scorer(**config: object) -> WorkloadScorer:
    return WorkloadScorer(CombinerConfig(persistence=2, floors=floors(), scorer=ScorerConfig(warmup_points=8),
                                         **config))  # type: ignore[arg-type]


def _run(scorer: WorkloadScorer, series: dict[str, list[float]]) -> WorkloadVerdict:
    length = max(len(v) for v in series.values())
    verdict = None
    for i in range(length):
        verdict = scorer.observe(1_764_000_000.0 + i * STEP_S, {k: v[i] for k, v in series.items()})
    assert verdict is not None
    return verdict


def test_ratio_from_zero_is_taken_against_the_floor_and_flagged() -> None:
    assert moved(3.0, 0.0, floor=1.0) == moved(3.0, 0.2, floor=1.0)  # below the floor is zero
    assert moved(3.0, 0.0, floor=1.0).ratio == 3.0 and moved(3.0, 0.0, floor=1.0).from_zero
    assert moved(0.0, 0.0, floor=1.0).ratio == 1.0 and not moved(0.0, 0.0, floor=1.0).from_zero  # nothing moved
    assert moved(6.0, 2.0, floor=1.0).ratio == 3.0 and not moved(6.0, 2.0, floor=1.0).from_zero
    assert moved(None, 2.0).ratio is None and moved(2.0, None).ratio is None  # unknown stays unknown


@given(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
       st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
       st.floats(min_value=0, max_value=1e9))
def test_a_ratio_is_never_a_division_by_zero_and_finite_when_both_values_are(
        now: float | None, baseline: float | None, floor: float) -> None:
    result = moved(now, baseline, floor)
    both_known = now is not None and baseline is not None and math.isfinite(now) and math.isfinite(baseline)
    assert (result.ratio is not None) == both_known
    if result.ratio is not None and abs(now or 0.0) < 1e300:
        assert math.isfinite(result.ratio)


def test_a_consumer_group_that_never_rebalanced_and_now_rebalances_is_anomalous_from_0() -> None:
    verdict = _run(_scorer(), {"kafka_rebalance_rate": [0.0] * 40 + [1.2] * 3})
    assert verdict.state == "anomalous"
    text = verdict.explain()
    assert "kafka_rebalance_rate up from 0 to 1.2" in text
    assert "e+" not in text and "000000" not in text, "no deviation in units of an error scale that is zero"


def test_from_zero_reaches_the_evidence_as_a_ratio_the_rebalance_storm_runbook_matches() -> None:
    verdict = _run(_scorer(), {"kafka_rebalance_rate": [0.0] * 40 + [3.0] * 3})
    (summary,) = signal_summaries(verdict)
    assert summary.from_zero and summary.ratio is not None and summary.ratio >= 4  # 3/min against 0.2/min
    evidence = build_evidence("inc-1", WORKLOAD, signals=[summary])
    item = evidence.get("sig:kafka_rebalance_rate")
    assert item is not None and item.data["fromZero"] is True and "0 -> 3" in item.summary
    assert RUNBOOKS["kafka-rebalance-storm"].matches(evidence) == ["sig:kafka_rebalance_rate"]
    # A deploy's one or two rebalances are from zero too, but no storm.
    (deploy,) = signal_summaries(_run(_scorer(), {"kafka_rebalance_rate": [0.0] * 40 + [1.2] * 3}))
    assert RUNBOOKS["kafka-rebalance-storm"].matches(build_evidence("inc-2", WORKLOAD, signals=[deploy])) is None


def test_a_signal_that_stays_at_zero_is_normal_with_a_ratio_of_one() -> None:
    verdict = _run(_scorer(), {"oom_kills": [0.0] * 43})
    assert verdict.state == "normal"
    (summary,) = signal_summaries(verdict)
    assert summary.ratio == 1.0 and not summary.from_zero


def test_an_evidence_only_signal_never_moves_the_verdict_but_reaches_the_evidence() -> None:
    scorer = _scorer(evidence_only=frozenset({"oom_kills"}))
    verdict = _run(scorer, {"cpu_usage_cores": [0.5, 0.52, 0.49, 0.51] * 10 + [0.5, 0.51, 0.5],
                            "oom_kills": [0.0] * 40 + [3.0] * 3})
    assert verdict.state == "normal", verdict.explain()
    oom = next(s for s in signal_summaries(verdict) if s.name == "oom_kills")
    assert oom.from_zero and oom.ratio == 3.0 and oom.direction == "up"


def test_only_evidence_signals_with_data_leave_the_workload_unknown() -> None:
    scorer = _scorer(evidence_only=frozenset({"oom_kills"}))
    verdict = _run(scorer, {"cpu_usage_cores": [math.nan] * 12, "oom_kills": [0.0] * 12})
    assert verdict.state == "unknown"


def test_same_time_yesterday_gives_the_seasonal_ratio_the_daily_peak_runbook_reads() -> None:
    rate = [1e5, 1.02e5, 0.98e5, 1.01e5] * 10 + [4e5] * 3  # 4x the recent level: a flood, or the daily peak
    verdict = _run(_scorer(), {"kafka_producer_byte_rate": rate})
    assert verdict.state == "anomalous"
    peak = build_evidence("inc-2", WORKLOAD, signals=signal_summaries(verdict, {"kafka_producer_byte_rate": 3.8e5}))
    assert peak.get("sig:kafka_producer_byte_rate").data["seasonalRatio"] < 1.3  # type: ignore[union-attr]
    assert RUNBOOKS["benign-daily-peak"].matches(peak) is not None
    flood = build_evidence("inc-3", WORKLOAD, signals=signal_summaries(verdict, {"kafka_producer_byte_rate": 1e5}))
    assert RUNBOOKS["benign-daily-peak"].matches(flood) is None
    # Without history a day back there is no seasonal ratio: unknown, and the peak runbook cannot excuse it.
    unknown = build_evidence("inc-4", WORKLOAD, signals=signal_summaries(verdict))
    assert "seasonalRatio" not in unknown.get("sig:kafka_producer_byte_rate").data  # type: ignore[union-attr]
    assert RUNBOOKS["benign-daily-peak"].matches(unknown) is None


def test_a_quiet_producer_starting_to_flood_from_zero_gets_the_producer_flood_ratio() -> None:
    verdict = _run(_scorer(), {"kafka_producer_byte_rate": [0.0] * 40 + [2e6] * 3})
    assert verdict.state == "anomalous" and "from 0 to 2.000e+06" in verdict.explain()
    evidence = build_evidence("inc-5", WORKLOAD, signals=signal_summaries(verdict))
    assert RUNBOOKS["kafka-producer-flood"].matches(evidence) is not None


def test_a_signal_read_once_from_history_is_explained_at_its_last_point_against_the_points_before() -> None:
    config = CombinerConfig(floors=floors(), evidence_only=frozenset({"oom_kills", "http_error_ratio"}),
                            scorer=ScorerConfig(warmup_points=8))
    start = 1_764_000_000.0
    history = {"oom_kills": [(start + i * STEP_S, 0.0 if i < 40 else 2.0) for i in range(41)],
               "http_error_ratio": [(start + i * STEP_S, 0.01) for i in range(5)]}  # too little to judge
    explained = explain_history(history, config)
    assert [s.name for s in explained if s.score is not None] == ["oom_kills"]
    verdict = WorkloadVerdict("anomalous", 0.9, start, explained)
    summaries = {s.name: s for s in signal_summaries(verdict)}
    oom = summaries["oom_kills"]
    assert (oom.baseline, oom.now, oom.ratio, oom.from_zero) == (0.0, 2.0, 2.0, True)
    # Too little history to score is still a value read: in the evidence with it, and no move claimed.
    assert summaries["http_error_ratio"].now == 0.01 and summaries["http_error_ratio"].direction is None
    # A declared backfill is excused only while it is healthy: OOM kills read this way end the excuse.
    declared = {"annotations": {"sequestra.dev/expected-load": "backfill until 06:00"}}
    backfill = RUNBOOKS["benign-planned-backfill"]
    assert backfill.matches(build_evidence("inc-6", WORKLOAD, spec=declared)) is not None
    assert backfill.matches(build_evidence("inc-7", WORKLOAD, signals=[oom], spec=declared)) is None
    # Errors read before the scorer has a baseline for them end it too: unknown errors are not "no errors".
    failing = explain_history({"http_error_ratio": [(start + i * STEP_S, 0.4) for i in range(5)]}, config)
    evidence = build_evidence("inc-8", WORKLOAD, signals=signal_summaries(
        WorkloadVerdict("anomalous", 0.9, start, failing)), spec=declared)
    assert backfill.matches(evidence) is None
