"""One Prometheus query per signal per interval for every policy: the shared sample answers each loop with
its own namespaces' series, as its own query did."""

from __future__ import annotations

from typing import Any

import pytest

from sequestra.model.workload import WorkloadRef
from sequestra.signals.attribution import Attribution
from sequestra.signals.catalog import CATALOG
from sequestra.signals.prometheus import SharedSampler, SignalsUnavailable

CPU = CATALOG["cpu_usage_cores"]
MEMORY = CATALOG["memory_working_set_bytes"]


class RecordingPrometheus:
    """Answers every instant query with one series per pod of every namespace it names (a stand-in for the
    HTTP API only: the sharing is what is tested; the real Prometheus is in the integration tests)."""

    url = "http://prometheus.test"
    scrape_interval_s = 5.0

    def __init__(self, pods: dict[str, str], failing: bool = False) -> None:
        self.pods = pods  # pod -> namespace
        self.failing = failing
        self.asked: list[str] = []

    def query(self, query: str, at: float) -> list[dict[str, Any]]:
        self.asked.append(query)
        if self.failing:
            raise ConnectionError("connection refused")
        return [{"metric": {"namespace": ns, "pod": pod, "container": "main"}, "value": [at, "0.5"]}
                for pod, ns in self.pods.items() if ns in query]


def _attribution(namespaces: list[str]) -> Attribution:
    workloads = [{"kind": "Deployment", "metadata": {"name": "web", "namespace": ns}} for ns in namespaces]
    pods = [{"kind": "Pod", "metadata": {"name": f"web-{ns}", "namespace": ns, "ownerReferences": [
        {"kind": "Deployment", "name": "web", "controller": True}]}} for ns in namespaces]
    return Attribution.build(workloads, [], pods)


def test_thirty_policies_sampled_at_one_moment_cost_one_query_per_signal_and_each_sees_only_its_own() -> None:
    namespaces = [f"team-{i:02d}" for i in range(30)]
    prometheus = RecordingPrometheus({f"web-{ns}": ns for ns in namespaces})
    sampler = SharedSampler(prometheus)  # type: ignore[arg-type]
    attribution = _attribution(namespaces)
    for ns in namespaces:  # each loop registers its namespaces first (as at its first interval)
        sampler.sample(f"{ns}/policy", [], [ns], attribution, 0.0)

    samples = {ns: sampler.sample(f"{ns}/policy", [CPU, MEMORY], [ns], attribution, 100.0) for ns in namespaces}

    assert len(prometheus.asked) == 2, "one query per signal for all thirty policies"
    for ns, sample in samples.items():
        assert dict(sample.values) == {WorkloadRef(ns, "Deployment", "web"): {
            "cpu_usage_cores": 0.5, "memory_working_set_bytes": 0.5}}
        assert not sample.unattributed, "the other policies' series are theirs, not unattributed here"


def test_a_later_interval_asks_again_and_a_policys_own_query_is_its_own() -> None:
    prometheus = RecordingPrometheus({"web-a": "a", "web-b": "b"})
    sampler = SharedSampler(prometheus, share_s=2.0)  # type: ignore[arg-type]
    attribution = _attribution(["a", "b"])
    sampler.sample("a/p", [CPU], ["a"], attribution, 100.0)
    sampler.sample("b/p", [CPU], ["b"], attribution, 101.0)
    assert len(prometheus.asked) == 2, "b registered after a's query: a union query is new"
    sampler.sample("a/p", [CPU], ["a"], attribution, 105.0)
    sampler.sample("b/p", [CPU], ["b"], attribution, 105.5)
    assert len(prometheus.asked) == 3
    own = 'sum by (namespace, pod) (rate(my_cpu{namespace=~"{namespaces}"}[1m]))'
    sampler.sample("a/p", [CPU], ["a"], attribution, 105.5, {"cpu_usage_cores": own})
    assert prometheus.asked[-1] == own.replace("{namespaces}", "a")


def test_prometheus_down_is_unknown_for_every_policy_sharing_the_query() -> None:
    sampler = SharedSampler(RecordingPrometheus({}, failing=True))  # type: ignore[arg-type]
    for ns in ("a", "b"):
        with pytest.raises(SignalsUnavailable, match="connection refused"):
            sampler.sample(f"{ns}/p", [CPU], [ns], _attribution([ns]), 100.0)
