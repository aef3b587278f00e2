"""The kubelet stand-in: overrides select the right pods, counters integrate the level, limits cap it."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from pydantic import ValidationError

from sequestra.sandbox.kafka_clients import KAFKA_CLIENT_ANNOTATION
from sequestra.sandbox.workload_metrics import (
    Override,
    PodFollower,
    PodInfo,
    Scenario,
    WorkloadMetrics,
    _quantity,
)


def _pod(name: str, namespace: str = "shop", cpu_limit: float | None = None, **labels: str) -> PodInfo:
    limits = {"cpu_limit": cpu_limit} if cpu_limit else {}
    return PodInfo(namespace, name, labels, {"main": limits}, baseline_cpu=0.1, baseline_memory=100e6)


def _value(text: str, metric: str, pod: str) -> float:
    for line in text.splitlines():
        if line.startswith(metric + "{") and f'pod="{pod}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{metric} for {pod} not in exposition")


def _run_for(metrics: WorkloadMetrics, seconds: float) -> None:
    metrics.tick()
    time.sleep(seconds)
    metrics.tick()


def test_override_needs_a_pod_selector() -> None:
    with pytest.raises(ValidationError, match="pod, pod_prefix or labels"):
        Override(namespace="shop", cpu_cores=3)


def test_override_by_prefix_matches_only_that_workloads_pods_in_its_namespace() -> None:
    override = Override(namespace="shop", pod_prefix="web-", cpu_cores=3)
    assert override.matches(_pod("web-abc-1"), "main")
    assert not override.matches(_pod("worker-1"), "main")
    assert not override.matches(_pod("web-abc-1", namespace="other"), "main")


def test_override_by_labels() -> None:
    override = Override(namespace="shop", labels={"app": "web"}, cpu_cores=3)
    assert override.matches(_pod("x", app="web"), "main")
    assert not override.matches(_pod("y", app="api"), "main")


def test_cpu_counter_grows_at_the_overridden_rate_and_others_keep_baseline() -> None:
    metrics = WorkloadMetrics()
    metrics.set_pods([_pod("hog"), _pod("quiet")])
    metrics.add_override(Override(namespace="shop", pod="hog", cpu_cores=4.0))
    _run_for(metrics, 0.5)
    text = metrics.exposition()
    hog, quiet = (_value(text, "container_cpu_usage_seconds_total", p) for p in ("hog", "quiet"))
    assert hog > 10 * quiet
    assert 1.2 < hog < 3.0  # ~4 cores x ~0.5 s, with noise and timer slack


def test_cpu_limit_caps_usage_like_cfs_throttling() -> None:
    metrics = WorkloadMetrics()
    metrics.set_pods([_pod("capped", cpu_limit=0.5)])
    metrics.add_override(Override(namespace="shop", pod="capped", cpu_cores=8.0))
    _run_for(metrics, 0.5)
    assert _value(metrics.exposition(), "container_cpu_usage_seconds_total", "capped") < 0.5
    assert 'resource="cpu",unit="core"} 0.5' in metrics.exposition()


def test_restarts_are_added_once_per_override() -> None:
    metrics = WorkloadMetrics()
    metrics.set_pods([_pod("crashy")])
    metrics.add_override(Override(namespace="shop", pod="crashy", restarts_add=2))
    metrics.tick()
    metrics.tick()
    assert _value(metrics.exposition(), "kube_pod_container_status_restarts_total", "crashy") == 2


def test_an_oom_kill_restarts_the_container_and_reads_oomkilled_as_kube_state_metrics_shows_it() -> None:
    metrics = WorkloadMetrics()
    metrics.set_pods([_pod("leaky"), _pod("fine")])
    assert "kube_pod_container_status_last_terminated_reason{" not in metrics.exposition()
    metrics.add_override(Override(namespace="shop", pod="leaky", restarts_add=1, last_terminated_reason="OOMKilled"))
    text = metrics.exposition()
    assert _value(text, "kube_pod_container_status_restarts_total", "leaky") == 1
    assert ('kube_pod_container_status_last_terminated_reason{namespace="shop",pod="leaky",container="main",'
            'reason="OOMKilled"} 1') in text
    assert 'last_terminated_reason{namespace="shop",pod="fine"' not in text


def test_http_counters_only_for_pods_that_serve_and_errors_at_the_overridden_share() -> None:
    metrics = WorkloadMetrics()
    metrics.set_pods([_pod("api-1"), _pod("batch-1")])
    assert "http_requests_total{" not in metrics.exposition(), "no HTTP series for pods that serve none"
    metrics.add_override(Override(namespace="shop", pod="api-1", http_requests_per_s=200, http_error_ratio=0.25))
    _run_for(metrics, 0.5)
    text = metrics.exposition()
    ok = next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("http_requests_total{") and 'pod="api-1"' in line and 'code="200"' in line)
    errors = next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("http_requests_total{") and 'pod="api-1"' in line and 'code="500"' in line)
    assert 50 < ok + errors < 200 and 0.2 < errors / (ok + errors) < 0.3
    assert 'http_requests_total{namespace="shop",pod="batch-1"' not in text


def test_scenario_steps_take_effect_only_when_due() -> None:
    metrics = WorkloadMetrics()
    metrics.set_pods([_pod("web-1")])
    metrics.schedule(Scenario.model_validate({"steps": [
        {"after_s": 0, "namespace": "shop", "pod": "web-1", "memory_bytes": 1e9},
        {"after_s": 3600, "namespace": "shop", "pod": "web-1", "memory_bytes": 5e9},
    ]}))
    metrics.tick()
    memory = _value(metrics.exposition(), "container_memory_working_set_bytes", "web-1")
    assert 0.9e9 < memory < 1.1e9
    assert len(metrics.overrides()) == 1


def test_pods_that_went_away_stop_being_reported() -> None:
    metrics = WorkloadMetrics()
    metrics.set_pods([_pod("a"), _pod("b")])
    metrics.set_pods([_pod("b")])
    assert 'pod="a"' not in metrics.exposition()


@pytest.mark.parametrize(("text", "expected"), [
    ("250m", 0.25), ("2", 2.0), ("512Mi", 512 * 2**20), ("1G", 1e9), (None, None),
])
def test_quantity_parsing(text: str | None, expected: float | None) -> None:
    assert _quantity(text) == expected


def test_kafka_client_annotation_is_parsed_and_a_bad_one_is_ignored() -> None:
    from sequestra.sandbox.kafka_clients import KAFKA_CLIENT_ANNOTATION, parse_annotation

    spec = parse_annotation({KAFKA_CLIENT_ANNOTATION: '{"role": "producer", "topic": "t", "bytesPerSecond": 5}'})
    assert spec is not None and (spec.role, spec.topic, spec.bytes_per_second, spec.user) == ("producer", "t", 5, "app")
    assert parse_annotation({KAFKA_CLIENT_ANNOTATION: '{"role": "juggler", "topic": "t"}'}) is None
    assert parse_annotation({KAFKA_CLIENT_ANNOTATION: "not json"}) is None
    assert parse_annotation({}) is None


class RecordingKafkaClients:
    """Fake of KafkaClients that records what it was asked to run (starting real clients needs a broker)."""

    def __init__(self) -> None:
        self.wanted: dict[tuple[str, str], Any] = {}
        self.calls = 0

    def reconcile(self, wanted: dict[tuple[str, str], Any]) -> None:
        self.wanted, self.calls = dict(wanted), self.calls + 1


def _raw_pod(name: str, phase: str = "Running", cpu_limit: str | None = None, kafka: dict[str, Any] | None = None,
             deleting: bool = False) -> dict[str, Any]:
    annotations = {KAFKA_CLIENT_ANNOTATION: json.dumps(kafka)} if kafka else {}
    resources = {"limits": {"cpu": cpu_limit}} if cpu_limit else {}
    meta: dict[str, Any] = {"namespace": "shop", "name": name, "annotations": annotations}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-23T00:00:00Z"
    return {"metadata": meta, "spec": {"containers": [{"name": "main", "resources": resources}]},
            "status": {"phase": phase}}


def test_pods_followed_from_a_list_and_watch_events_keep_counters_and_kafka_clients_in_step() -> None:
    metrics, kafka = WorkloadMetrics(), RecordingKafkaClients()
    follower = PodFollower(metrics, kafka)  # type: ignore[arg-type]
    producer = {"role": "producer", "topic": "orders"}
    follower.relist([_raw_pod("web-1"), _raw_pod("pending-1", phase="Pending"), _raw_pod("prod-1", kafka=producer)])
    text = metrics.exposition()
    assert 'pod="web-1"' in text and 'pod="prod-1"' in text and 'pod="pending-1"' not in text
    assert list(kafka.wanted) == [("shop", "prod-1")]

    _run_for(metrics, 0.2)
    before = _value(metrics.exposition(), "container_cpu_usage_seconds_total", "web-1")
    follower.event("MODIFIED", _raw_pod("web-1", cpu_limit="500m"))  # a resize: the counter carries on
    text = metrics.exposition()
    assert _value(text, "container_cpu_usage_seconds_total", "web-1") >= before > 0
    assert _value(text, "kube_pod_container_resource_limits", "web-1") == 0.5

    calls = kafka.calls
    follower.event("ADDED", _raw_pod("pending-1"))  # now Running
    assert 'pod="pending-1"' in metrics.exposition() and kafka.calls == calls, "no Kafka change, no reconcile"
    follower.event("MODIFIED", _raw_pod("prod-1", kafka=producer, deleting=True))  # on its way out
    assert kafka.wanted == {} and 'pod="prod-1"' in metrics.exposition()
    follower.event("DELETED", _raw_pod("prod-1", kafka=producer, deleting=True))
    follower.event("MODIFIED", _raw_pod("web-1", phase="Succeeded"))
    text = metrics.exposition()
    assert 'pod="prod-1"' not in text and 'pod="web-1"' not in text and 'pod="pending-1"' in text


def test_outbound_calls_are_counted_apart_from_served_requests() -> None:
    """A caller's retries show on its client counters, not as requests it served."""
    metrics = WorkloadMetrics()
    metrics.set_pods([_pod("caller-1")])
    metrics.add_override(Override(namespace="shop", pod="caller-1", http_client_requests_per_s=400,
                                  http_client_error_ratio=0.75))
    _run_for(metrics, 0.5)
    text = metrics.exposition()

    def count(status: str) -> float:
        return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("http_client_requests_seconds_count{") and f'status="{status}"' in line)

    assert count("503") > 0 and 0.6 < count("503") / (count("503") + count("200")) < 0.9
    assert "http_requests_total{" not in text, "sending requests is not serving them"


def test_a_pod_that_calls_other_services_sends_at_its_annotated_rate_until_an_override_changes_it() -> None:
    from sequestra.sandbox.workload_metrics import BASELINE_HTTP_CLIENT_ANNOTATION, pod_info

    pod = pod_info({"metadata": {"namespace": "shop", "name": "caller-1", "annotations": {
        BASELINE_HTTP_CLIENT_ANNOTATION: "100"}}, "spec": {"containers": [{"name": "main"}]}})
    metrics = WorkloadMetrics()
    metrics.set_pods([pod])
    _run_for(metrics, 0.5)
    sent = _value(metrics.exposition(), "http_client_requests_seconds_count", "caller-1")
    assert 20 < sent < 100  # ~100/s for half a second, all answered 200
