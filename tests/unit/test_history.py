"""Yesterday for the sandbox's Prometheus: the samples a pod's past is written as, and the rules that keep
today's data out of reach."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequestra.sandbox.errors import SandboxError
from sequestra.sandbox.history import (
    DAY_S,
    STAND_IN_INSTANCE,
    Series,
    check_window,
    counter_points,
    day_ago,
    grid,
    level_at,
    openmetrics,
    pod_series,
    prometheus_duration_s,
)

NOW = 1_796_293_170.0


def test_a_counter_grows_by_the_cores_it_was_given_each_second() -> None:
    points = counter_points(0.75, grid(1000.0, 1060.0, 5.0))
    slopes = [(b - a) / (tb - ta) for (ta, a), (tb, b) in pairwise(points)]
    assert slopes == pytest.approx([0.75] * 12)


def test_a_counter_starts_where_an_hour_at_its_first_rate_took_it() -> None:
    # From zero, rate()'s extrapolation would stop at the zero crossing and under-read the first window.
    assert counter_points(0.5, [100.0, 105.0])[0] == (100.0, 1800.0)


def test_a_stepped_level_changes_the_counters_slope_from_its_step_on() -> None:
    points = counter_points([(0.0, 0.1), (20.0, 2.0)], grid(0.0, 40.0, 10.0))
    slopes = [(b - a) / (tb - ta) for (ta, a), (tb, b) in pairwise(points)]
    assert slopes == pytest.approx([0.1, 0.1, 2.0, 2.0])


@given(st.lists(st.tuples(st.integers(0, 600), st.floats(0, 64, allow_nan=False)), min_size=1, max_size=6),
       st.integers(1, 30))
def test_a_counter_never_falls_and_each_step_is_the_level_then(steps: list[tuple[int, float]], step_s: int) -> None:
    level = sorted((float(t), v) for t, v in steps)
    points = counter_points(level, grid(0.0, 600.0, float(step_s)))
    for (ta, a), (tb, b) in pairwise(points):
        assert b >= a
        assert (b - a) == pytest.approx(level_at(level, ta) * (tb - ta), abs=1e-6)


def test_before_its_first_step_a_level_holds_its_first_value() -> None:
    assert level_at([(50.0, 1.0), (80.0, 3.0)], 10.0) == 1.0
    assert level_at([(50.0, 1.0), (80.0, 3.0)], 80.0) == 3.0
    assert level_at(0.4, 1e12) == 0.4


def test_the_grid_is_aligned_so_a_window_written_twice_has_the_same_timestamps() -> None:
    assert grid(1001.0, 1021.0, 5.0) == [1005.0, 1010.0, 1015.0, 1020.0]
    assert grid(1003.2, 1021.0, 5.0) == grid(1001.0, 1024.0, 5.0)


def test_yesterday_around_now_reaches_past_the_moment_a_day_ago() -> None:
    start, end = day_ago(NOW, before_s=600, after_s=900)
    assert (start, end) == (NOW - DAY_S - 600, NOW - DAY_S + 900)


def test_a_pods_series_carry_the_labels_the_stand_in_s_series_get_once_scraped() -> None:
    series = pod_series("shop", ["web-1"], 1000.0, 1030.0, containers=("main", "sidecar"), cpu_cores=0.2)
    assert [s.name for s in series] == ["container_cpu_usage_seconds_total"] * 2
    assert series[0].labels == {"namespace": "shop", "pod": "web-1", "container": "main",
                                "job": "workload-metrics", "instance": STAND_IN_INSTANCE}
    assert {s.labels["container"] for s in series} == {"main", "sidecar"}


def test_memory_is_a_gauge_and_served_requests_split_by_code() -> None:
    series = pod_series("shop", ["web-1"], 1000.0, 1010.0, memory_bytes=[(0.0, 1e8), (1005.0, 3e8)],
                        http_requests_per_s=10.0, http_error_ratio=0.25)
    memory = next(s for s in series if s.name == "container_memory_working_set_bytes")
    assert memory.points == ((1000.0, 1e8), (1005.0, 3e8), (1010.0, 3e8))
    http = {s.labels["code"]: s for s in series if s.name == "http_requests_total"}
    assert http["200"].points[1][1] - http["200"].points[0][1] == pytest.approx(7.5 * 5)
    assert http["500"].points[1][1] - http["500"].points[0][1] == pytest.approx(2.5 * 5)


def test_openmetrics_keeps_each_series_together_in_time_order_and_ends_with_eof() -> None:
    b = Series("b_total", {"pod": "x"}, ((10.0, 1.0), (15.0, 2.0)))
    a = Series("a", {"pod": 'q"uo\\te'}, ((10.0, 0.5),))
    text = openmetrics([b, a])
    assert text.splitlines() == ['a{pod="q\\"uo\\\\te"} 0.5 10.000',
                                 'b_total{pod="x"} 1.0 10.000', 'b_total{pod="x"} 2.0 15.000', "# EOF"]


def test_a_series_selector_names_every_label_exactly() -> None:
    series = Series("m", {"pod": 'p"1', "namespace": "ns"}, ((1.0, 1.0),))
    assert series.selector() == '{__name__="m", namespace="ns", pod="p\\"1"}'


@pytest.mark.parametrize("points", [(), ((2.0, 1.0), (1.0, 2.0)), ((1.0, float("nan")),)])
def test_a_series_refuses_points_promtool_would_not_take(points: tuple[tuple[float, float], ...]) -> None:
    with pytest.raises(ValueError):
        Series("m", {}, points)


def test_a_series_refuses_names_prometheus_would_not_take() -> None:
    with pytest.raises(ValueError):
        Series("cpu-usage", {}, ((1.0, 1.0),))
    with pytest.raises(ValueError):
        Series("m", {"__name__": "x"}, ((1.0, 1.0),))


def test_samples_in_the_heads_range_are_refused_so_today_is_never_truncated() -> None:
    series = pod_series("shop", ["web-1"], NOW - 600, NOW - 60, cpu_cores=1.0)
    with pytest.raises(SandboxError, match="head"):
        check_window(series, head_min_s=NOW - 3600, retention_s=2 * DAY_S, now=NOW)


def test_samples_the_retention_would_delete_at_once_are_refused() -> None:
    series = pod_series("shop", ["web-1"], NOW - 3 * DAY_S, NOW - 3 * DAY_S + 60, cpu_cores=1.0)
    with pytest.raises(SandboxError, match="retention"):
        check_window(series, head_min_s=NOW - 3600, retention_s=2 * DAY_S, now=NOW)


def test_yesterday_is_within_the_window_a_backfill_may_write() -> None:
    series = pod_series("shop", ["web-1"], *day_ago(NOW, 600, 3600), cpu_cores=1.0)
    check_window(series, head_min_s=NOW - 3 * 3600, retention_s=2 * DAY_S, now=NOW)


@pytest.mark.parametrize(("text", "seconds"), [("2d", 2 * DAY_S), ("1w2d", 9 * DAY_S), ("36h", 36 * 3600.0),
                                               ("0s", 0.0), ("1h30m", 5400.0)])
def test_prometheus_durations(text: str, seconds: float) -> None:
    assert prometheus_duration_s(text) == seconds


def test_a_duration_prometheus_would_not_write_is_refused() -> None:
    with pytest.raises(ValueError):
        prometheus_duration_s("2 days")
