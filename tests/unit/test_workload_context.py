"""The context the loop gives the diagnoser besides signals, built from objects as the API server and the
broker return them, and what the shipped runbooks conclude from it."""

from __future__ import annotations

from typing import Any

from sequestra.diagnosis import Diagnoser, build_evidence, default_runbooks_dir, load_runbooks
from sequestra.model.evidence import SignalSummary
from sequestra.model.workload import WorkloadRef
from sequestra.scoring.consumer_groups import ConsumerGroupRules, ConsumerGroupTracker
from sequestra.signals.attribution import Attribution
from sequestra.signals.context import (
    KAFKA_CONSUMER_GROUP_ANNOTATION,
    consumer_group_context,
    consumer_groups_of,
    spark_context,
    spec_excerpt,
    warning_events,
)

LADDER = ["observe", "throttle", "quarantine"]
SINCE = 1_763_900_000.0
DIAGNOSER = Diagnoser(load_runbooks(default_runbooks_dir()))


def spark_application(*, dynamic: bool, max_executors: int | None, instances: int = 2,
                      states: dict[str, str] | None = None) -> dict[str, Any]:
    allocation: dict[str, Any] = {"enabled": dynamic, "minExecutors": 1}
    if max_executors is not None:
        allocation["maxExecutors"] = max_executors
    return {"apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
            "metadata": {"name": "etl", "namespace": "data", "uid": "u-etl"},
            "spec": {"type": "Scala", "mode": "cluster", "executor": {"instances": instances, "cores": 1},
                     "dynamicAllocation": allocation},
            "status": {"applicationState": {"state": "RUNNING"}, "executorState": states or {}}}


def deployment(name: str = "billing", *, annotations: dict[str, str] | None = None,
               status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    return {"kind": "Deployment",
            "metadata": {"name": name, "namespace": "shop", "uid": f"u-{name}", "generation": generation,
                         "annotations": annotations or {}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "app", "image": "registry.local/billing:1.4.2",
                 "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "250m"}}}]}}},
            "status": status if status is not None else {"observedGeneration": generation, "replicas": 3,
                                                         "updatedReplicas": 3}}


def test_a_runaway_dynamic_allocation_is_diagnosed_from_the_application_object() -> None:
    app = spark_application(dynamic=True, max_executors=40)
    ref = WorkloadRef("data", "SparkApplication", "etl")
    spark = spark_context(app, 40.0)
    assert spark == {"application": "etl", "dynamicAllocation": True, "executors": 40, "maxExecutors": 40,
                     "minExecutors": 1, "state": "RUNNING"}
    signal = SignalSummary(name="spark_executors", baseline=4.0, now=40.0, deviation=30.0, direction="up", since=SINCE)
    evidence = build_evidence("inc", ref, signals=[signal], spark=spark, spec=spec_excerpt(ref.kind, app), since=SINCE)
    diagnosis = DIAGNOSER.diagnose(evidence, LADDER)
    assert diagnosis.category == "spark-runaway-dynamic-allocation"
    assert diagnosis.action == "throttle"

    excerpt = spec_excerpt(ref.kind, app)
    assert excerpt["resources"] == {"executor": {"instances": 2, "cores": 1}}
    # The same growth without dynamic allocation (someone raised executor.instances) is not that runbook.
    static = spark_application(dynamic=False, max_executors=None, instances=40)
    static_spark = spark_context(static, 40.0)
    assert static_spark is not None and static_spark["maxExecutors"] == 40 and not static_spark["dynamicAllocation"]
    other = DIAGNOSER.diagnose(build_evidence("inc", ref, signals=[signal], spark=static_spark, since=SINCE), LADDER)
    assert other.category != "spark-runaway-dynamic-allocation"


def test_spark_executors_fall_back_to_the_operator_reported_states_and_losses_are_counted() -> None:
    app = spark_application(dynamic=True, max_executors=None,
                            states={"etl-exec-1": "RUNNING", "etl-exec-2": "RUNNING", "etl-exec-3": "FAILED"})
    context = spark_context(app, None)
    assert context is not None
    assert context["executors"] == 2
    assert "maxExecutors" not in context  # no ceiling: unknown, not zero
    assert context["executorLosses"] == {"FAILED": 1}


def test_spec_excerpt_carries_images_resources_annotations_and_rollout_state() -> None:
    settled = spec_excerpt("Deployment", deployment(annotations={
        "sequestra.dev/expected-load": "black friday", "kubectl.kubernetes.io/last-applied-configuration": "{...}"}))
    assert settled["images"] == ["registry.local/billing:1.4.2"]
    assert settled["resources"] == {"app": {"limits": {"cpu": "1"}, "requests": {"cpu": "250m"}}}
    assert settled["annotations"] == {"sequestra.dev/expected-load": "black friday"}
    assert settled["rollout"] == {"inProgress": False, "updatedReplicas": 3, "replicas": 3}
    rolling = spec_excerpt("Deployment", deployment(generation=2, status={
        "observedGeneration": 2, "replicas": 4, "updatedReplicas": 1}))
    assert rolling["rollout"]["inProgress"] is True
    never_reconciled = spec_excerpt("Deployment", deployment(status={}))
    assert "rollout" not in never_reconciled


def stalled_group(tracker: ConsumerGroupTracker, group: str) -> None:
    # The consumer stays a member, its committed offsets stop while producers keep writing.
    for step in range(5):
        offsets = {("invoices", p): (1000 if step else 990, 1000 + 400 * step) for p in range(4)}
        tracker.observe(group, SINCE + 10 * step, offsets, members_active=True)


def test_a_stalled_consumer_group_attributed_by_client_id_is_diagnosed_stuck_and_observed() -> None:
    workload = deployment(annotations={"sequestra.dev/kafka-client-id": "billing-*"})
    pod = {"metadata": {"name": "billing-7d4-x", "namespace": "shop",
                        "ownerReferences": [{"kind": "Deployment", "name": "billing", "controller": True}]}}
    attribution = Attribution.build([workload], [], [pod])
    ref = WorkloadRef("shop", "Deployment", "billing")
    members = {"billing-invoices": ("billing-7d4-x",), "other-group": ("reporting-1",)}
    assert consumer_groups_of(ref, attribution, members) == ["billing-invoices"]

    tracker = ConsumerGroupTracker(ConsumerGroupRules(window=10, min_samples=3))
    stalled_group(tracker, "billing-invoices")
    offsets = {("invoices", p): (1000, 2600) for p in range(4)}
    verdict = tracker.observe("billing-invoices", SINCE + 50, offsets, members_active=True)
    group = consumer_group_context(verdict, state="Stable", members=1, rebalances=0,
                                   lag_trend=tracker.lag_trend("billing-invoices"))
    assert group["status"] == "STALL" and group["severity"] == "ERR"
    assert group["lagTrend"] == "rising"
    assert len(group["stuckPartitions"]) == 4 and group["partitions"] == 4
    evidence = build_evidence("inc", ref, kafka={"consumerGroups": [group]}, since=SINCE)
    diagnosis = DIAGNOSER.diagnose(evidence, LADDER)
    assert diagnosis.category == "kafka-consumer-stuck"
    assert diagnosis.action == "observe"


def test_groups_can_be_declared_by_annotation() -> None:
    workload = deployment(annotations={KAFKA_CONSUMER_GROUP_ANNOTATION: "ledger, audit"})
    attribution = Attribution.build([workload], [], [])
    assert consumer_groups_of(WorkloadRef("shop", "Deployment", "billing"), attribution, {}) == ["audit", "ledger"]


def test_lag_trend_needs_samples_and_sees_falling_lag() -> None:
    tracker = ConsumerGroupTracker(ConsumerGroupRules(window=10, min_samples=3))
    tracker.observe("g", SINCE, {("t", 0): (0, 900)}, members_active=True)
    assert tracker.lag_trend("g") is None
    for step in range(1, 4):
        tracker.observe("g", SINCE + 10 * step, {("t", 0): (300 * step, 1000)}, members_active=True)
    assert tracker.lag_trend("g") == "falling"


def test_warning_events_of_the_workload_and_its_pods_are_merged_by_reason() -> None:
    workload = deployment()
    pods = [{"metadata": {"name": f"billing-7d4-{i}", "namespace": "shop",
                          "ownerReferences": [{"kind": "Deployment", "name": "billing", "controller": True}]}}
            for i in range(3)]
    attribution = Attribution.build([workload, deployment("search")], [], pods)
    ref = WorkloadRef("shop", "Deployment", "billing")

    def event(name: str, reason: str, count: int, *, kind: str = "Pod", type_: str = "Warning",
              at: str = "2025-11-23T12:30:00Z") -> dict[str, Any]:
        return {"type": type_, "reason": reason, "count": count, "lastTimestamp": at,
                "message": f"Back-off restarting failed container app in pod {name}",
                "involvedObject": {"kind": kind, "name": name, "namespace": "shop"}}

    events = [event("billing-7d4-0", "BackOff", 5), event("billing-7d4-1", "BackOff", 7),
              event("search-1", "BackOff", 50), event("billing-7d4-2", "Pulled", 1, type_="Normal"),
              event("billing-7d4-2", "BackOff", 9, at="2025-11-23T10:00:00Z"),  # before the lookback
              event("billing", "FailedCreate", 1, kind="Deployment")]
    merged = warning_events(ref, attribution, events, since=1_763_900_000.0 - 3600)
    assert [(e["reason"], e["count"]) for e in merged] == [("BackOff", 12), ("FailedCreate", 1)]
