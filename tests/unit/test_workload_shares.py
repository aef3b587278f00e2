"""A workload's share signals (error ratios) are its own share, whatever the number of its pods: the sum of
its pods' failures over the sum of their requests. Summing each pod's share made five healthy pods at 5 %
read as a workload failing 25 %, over a runbook's bound."""

from __future__ import annotations

from typing import Any

import pytest

from sequestra.model.workload import WorkloadRef
from sequestra.signals.attribution import Attribution
from sequestra.signals.catalog import CATALOG
from sequestra.signals.prometheus import History, PrometheusSignals, Sample, fold

ERRORS = CATALOG["http_error_ratio"]
WEB = WorkloadRef("shop", "Deployment", "web")


def _attribution(replicas: int) -> Attribution:
    workloads = [{"kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"}}]
    pods = [{"kind": "Pod", "metadata": {"name": f"web-{i}", "namespace": "shop", "ownerReferences": [
        {"kind": "Deployment", "name": "web", "controller": True}]}} for i in range(replicas)]
    return Attribution.build(workloads, [], pods)


def _parts(pods: dict[str, tuple[float, float]]) -> list[dict[str, Any]]:
    """The catalog query's answer: per pod its failed and its total requests/s, labelled by part."""
    return [{"metric": {"namespace": "shop", "pod": pod, "part": part}, "value": [0, str(value)]}
            for pod, (failed, total) in pods.items() for part, value in (("numerator", failed), ("denominator", total))]


def _share(series: list[dict[str, Any]], replicas: int) -> float | None:
    sample = Sample(at=0)
    fold(sample, ERRORS, series, _attribution(replicas))
    return sample.values.get(WEB, {}).get("http_error_ratio")


@pytest.mark.unit
@pytest.mark.parametrize("pods, expected", [
    ({f"web-{i}": (5.0, 100.0) for i in range(5)}, 0.05),  # five pods at 5 %: 5 %, not 25 %
    ({"web-0": (10.0, 100.0), "web-1": (10.0, 10.0)}, 20 / 110),  # a busy pod weighs more than a quiet one
    ({"web-0": (0.0, 50.0), "web-1": (0.0, 0.0), "web-2": (1.0, 50.0)}, 0.01),  # an idle pod adds no requests
    ({f"web-{i}": (9.0, 10.0) for i in range(3)}, 0.9),  # all failing: 90 %, never over 100 %
])
def test_a_workloads_share_is_its_failures_over_its_requests_whatever_its_pods(
        pods: dict[str, tuple[float, float]], expected: float) -> None:
    assert _share(_parts(pods), len(pods)) == pytest.approx(expected)


@pytest.mark.unit
def test_a_workload_serving_nothing_has_no_share() -> None:
    assert _share(_parts({"web-0": (0.0, 0.0), "web-1": (0.0, 0.0)}), 2) is None


@pytest.mark.unit
def test_a_policys_own_query_giving_each_pods_share_is_averaged_not_added() -> None:
    per_pod = [{"metric": {"namespace": "shop", "pod": f"web-{i}"}, "value": [0, "0.05"]} for i in range(4)]
    assert _share(per_pod, 4) == pytest.approx(0.05)


@pytest.mark.unit
def test_counted_signals_still_add_up_over_pods() -> None:
    sample = Sample(at=0)
    series = [{"metric": {"namespace": "shop", "pod": f"web-{i}"}, "value": [0, "0.5"]} for i in range(3)]
    fold(sample, CATALOG["cpu_usage_cores"], series, _attribution(3))
    assert sample.values[WEB]["cpu_usage_cores"] == pytest.approx(1.5)


class RangeAnswers:
    """Answers a range query with fixed series (the HTTP API only; the query itself is checked by promtool)."""

    def __init__(self, series: list[dict[str, Any]]) -> None:
        self.series = series

    def custom_query_range(self, query: str, **_: Any) -> list[dict[str, Any]]:
        return self.series


@pytest.mark.unit
def test_warm_up_history_reads_shares_the_same_way() -> None:
    def point(pod: str, part: str, values: list[float]) -> dict[str, Any]:
        return {"metric": {"namespace": "shop", "pod": pod, "part": part},
                "values": [[10.0 * i, str(v)] for i, v in enumerate(values)]}

    series = [point(f"web-{i}", "numerator", [1.0, 2.0, 0.0]) for i in range(5)]
    series += [point(f"web-{i}", "denominator", [20.0, 20.0, 0.0]) for i in range(5)]
    prometheus = PrometheusSignals("http://prometheus.test")
    prometheus._prom = RangeAnswers(series)  # type: ignore[assignment]
    history: History = prometheus.history([ERRORS], ["shop"], _attribution(5), 0, 30, 10)
    # The third point had no requests at all: no share, not a share of 0.
    assert history.points[WEB]["http_error_ratio"] == [(0.0, pytest.approx(0.05)), (10.0, pytest.approx(0.1))]
