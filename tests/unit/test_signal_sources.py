"""The catalog's signals that come from the Kafka admin API and the pod listing, per workload."""

from __future__ import annotations

from typing import Any

from sequestra.model.workload import WorkloadRef
from sequestra.scoring.consumer_groups import GroupStatus, GroupVerdict, PartitionStatus
from sequestra.signals.attribution import Attribution
from sequestra.signals.kafka import GroupObservation, KafkaSnapshot
from sequestra.signals.kubernetes import ClusterReader, ClusterSnapshot
from sequestra.signals.sources import declared_topics, kafka_values, kubernetes_values

NS = "shop"
BILLING = WorkloadRef(NS, "Deployment", "billing")
TOPICS = WorkloadRef(NS, "Deployment", "topic-maker")
IDLE = WorkloadRef(NS, "Deployment", "idle")
ALL = ("kafka_rebalance_rate", "kafka_consumer_lag", "kafka_partition_count")


def obj(kind: str, name: str, owner: tuple[str, str] | None = None,
        annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "annotations": annotations or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return {"kind": kind, "metadata": meta}


def attribution() -> Attribution:
    return Attribution.build(
        [obj("Deployment", "billing"), obj("Deployment", "idle"),
         obj("Deployment", "topic-maker", annotations={"sequestra.dev/kafka-topics": "tmp-*, orders"})],
        [obj("ReplicaSet", "billing-5c", ("Deployment", "billing"))],
        [obj("Pod", "billing-5c-a", ("ReplicaSet", "billing-5c")),
         obj("Pod", "billing-5c-b", ("ReplicaSet", "billing-5c"))])


def group(name: str, *, client_ids: tuple[str, ...] = (), last: tuple[str, ...] = (), rate: float | None = None,
          lag: int | None = None, topic: str = "invoices", partitions: int = 2) -> GroupObservation:
    verdict = GroupVerdict(name, GroupStatus.OK, PartitionStatus.OK, lag, ())
    return GroupObservation(group=name, state="Stable" if client_ids else "Empty", members=len(client_ids),
                            client_ids=client_ids, offsets={(topic, p): (0, 0) for p in range(partitions)},
                            verdict=verdict, rebalances=0, rebalances_total=0, rebalances_per_min=rate,
                            last_client_ids=last or client_ids)


def snapshot(*groups: GroupObservation, topics: dict[str, int] | None = None) -> KafkaSnapshot:
    return KafkaSnapshot(at=1.0, reachable=True, groups={g.group: g for g in groups},
                         topics=topics if topics is not None else {"invoices": 2, "orders": 3})


def test_a_group_whose_members_are_the_workloads_pods_gives_it_rebalance_rate_lag_and_partitions() -> None:
    values = kafka_values(snapshot(group("billing", client_ids=("billing-5c-a", "billing-5c-b"), rate=1.5, lag=40)),
                          attribution(), ALL)
    assert values[BILLING] == {"kafka_rebalance_rate": 1.5, "kafka_consumer_lag": 40.0, "kafka_partition_count": 2.0}
    assert IDLE not in values, "a workload with no group and no topic has no Kafka value: unknown, not 0"


def test_a_group_emptied_by_a_rebalance_storm_still_belongs_to_the_workload_that_left_it() -> None:
    values = kafka_values(snapshot(group("billing", last=("billing-5c-a",), rate=6.0)), attribution(), ALL)
    assert values[BILLING]["kafka_rebalance_rate"] == 6.0


def test_declared_topic_prefixes_count_topics_created_since() -> None:
    before = kafka_values(snapshot(topics={"orders": 3, "invoices": 2}), attribution(), ALL)
    after = kafka_values(snapshot(topics={"orders": 3, "invoices": 2, "tmp-1": 8, "tmp-2": 8}), attribution(), ALL)
    assert before[TOPICS] == {"kafka_partition_count": 3.0}
    assert after[TOPICS] == {"kafka_partition_count": 19.0}


def test_only_the_signals_asked_for_and_nothing_from_an_unreachable_broker() -> None:
    polled = snapshot(group("billing", client_ids=("billing-5c-a",), rate=1.0, lag=5))
    assert kafka_values(polled, attribution(), ["kafka_consumer_lag"]) == {BILLING: {"kafka_consumer_lag": 5.0}}
    assert kafka_values(KafkaSnapshot(at=1.0, reachable=False, reason="down"), attribution(), ALL) == {}
    assert kafka_values(None, attribution(), ALL) == {}


def test_declared_topics_match_exact_names_and_prefixes_only() -> None:
    workload = obj("Deployment", "x", annotations={"sequestra.dev/kafka-topics": "orders, tmp-*, *"})
    assert declared_topics(workload, ["orders", "orders-v2", "tmp-a", "other"]) == {"orders", "tmp-a"}


def test_pending_pods_are_counted_per_workload_and_zero_for_the_rest() -> None:
    cluster = ClusterSnapshot(attribution=attribution(), pod_pending={BILLING: 1})
    assert kubernetes_values(cluster, ["pods_pending"]) == {
        BILLING: {"pods_pending": 1.0}, IDLE: {"pods_pending": 0.0}, TOPICS: {"pods_pending": 0.0}}
    assert kubernetes_values(cluster, ["cpu_usage_cores"]) == {}


def test_spark_executor_pods_owned_by_their_driver_belong_to_the_application() -> None:
    app = WorkloadRef(NS, "SparkApplication", "etl")
    a = Attribution.build([obj("SparkApplication", "etl")], [],
                          [obj("Pod", "etl-driver", ("SparkApplication", "etl")),
                           obj("Pod", "etl-exec-1", ("Pod", "etl-driver")),
                           obj("Pod", "stray-exec", ("Pod", "gone-driver"))])
    assert a.pod(NS, "etl-driver") == app and a.pod(NS, "etl-exec-1") == app
    assert a.pod(NS, "stray-exec") is None


def test_a_spark_application_holds_its_running_executors_not_those_waiting_or_going() -> None:
    app, idle_app = WorkloadRef(NS, "SparkApplication", "etl"), WorkloadRef(NS, "SparkApplication", "idle")

    def pod(name: str, role: str, phase: str, *, deleting: bool = False) -> dict[str, Any]:
        body = obj("Pod", name, ("Pod", "etl-driver") if role == "executor" else ("SparkApplication", "etl"))
        body["metadata"]["labels"] = {"spark-role": role}
        if deleting:
            body["metadata"]["deletionTimestamp"] = "2026-12-07T10:00:00Z"
        body["status"] = {"phase": phase}
        return body

    pods = [pod("etl-driver", "driver", "Running"), pod("etl-exec-1", "executor", "Running"),
            pod("etl-exec-2", "executor", "Running"), pod("etl-exec-3", "executor", "Pending"),
            pod("etl-exec-4", "executor", "Running", deleting=True), pod("etl-exec-5", "executor", "Failed")]

    listed = {"sparkapplications": [obj("SparkApplication", "etl"), obj("SparkApplication", "idle")], "pods": pods}

    class FixedListing(ClusterReader):
        """The reader's own snapshot over fixed listings instead of the API server's."""

        def _list(self, group: str, version: str, plural: str, namespace: str,
                  query: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
            return [dict(item) for item in listed.get(plural, [])]

    reader = FixedListing(None)  # type: ignore[arg-type]
    cluster = reader.snapshot([NS], ("SparkApplication",))
    values = kubernetes_values(cluster, ["spark_executors"])
    assert values[app] == {"spark_executors": 2.0}
    assert values[idle_app] == {"spark_executors": 0.0}


def test_a_scheduled_application_s_run_is_a_workload_its_pods_attributed_to_it() -> None:
    run = obj("SparkApplication", "nightly-1765")
    run["metadata"]["ownerReferences"] = [{"kind": "ScheduledSparkApplication", "name": "nightly"}]  # no controller
    driver = obj("Pod", "nightly-1765-driver", ("SparkApplication", "nightly-1765"))
    listed = {"sparkapplications": [run], "scheduledsparkapplications": [obj("ScheduledSparkApplication", "nightly")],
              "pods": [driver]}

    class FixedListing(ClusterReader):
        def _list(self, group: str, version: str, plural: str, namespace: str,
                  query: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
            return [dict(item) for item in listed.get(plural, [])]

    cluster = FixedListing(None).snapshot([NS], ("SparkApplication", "ScheduledSparkApplication"))  # type: ignore[arg-type]
    ref = WorkloadRef(NS, "SparkApplication", "nightly-1765")
    assert ref in cluster.attribution.workloads
    assert cluster.attribution.pod(NS, "nightly-1765-driver") == ref
