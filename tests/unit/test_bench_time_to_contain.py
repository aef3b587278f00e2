"""How the time-to-contain bench judges its runs: the figures it prints must not flatter the operator."""

from __future__ import annotations

from bench.time_to_contain import GOAL_S, ContainResult, Run


def _result(effective: list[float | None]) -> ContainResult:
    runs = [Run(f"checkout-r{i}", 8.0, 8.5, e, None, 2e6) for i, e in enumerate(effective)]
    return ContainResult(runs, wanted=len(runs), false_alarms=0, operator_cores=0.05, operator_peak_cores=0.2,
                         operator_peak_rss=120 * 2**20, wall_s=600)


def test_p95_of_ten_runs_is_the_slowest_so_one_slow_run_misses_the_goal() -> None:
    fast = [10.0] * 9
    assert _result([*fast, GOAL_S - 1]).met_goals
    slow = _result([*fast, GOAL_S + 1])
    assert not slow.met_goals
    assert any("NOT met" in line and f"p95 ratio {(GOAL_S + 1) / GOAL_S:.2f}" in line for line in slow.lines())


def test_a_run_never_measured_effective_fails_the_goal_however_fast_the_others() -> None:
    result = _result([5.0, 5.0, None])
    assert not result.met_goals
    assert any("(2/3 runs)" in line for line in result.lines())
