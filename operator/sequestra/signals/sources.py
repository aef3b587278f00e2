"""Per-workload values of the catalog's signals that do not come from Prometheus. Pure: snapshots in.

- Kafka (the admin API's `KafkaSnapshot`): a consumer group belongs to a workload when one of its
  members' client ids attributes to it (the last members seen, if a storm has emptied the group) or the
  workload names it (`sequestra.dev/kafka-consumer-group`). A topic belongs to a workload when one of its
  groups holds offsets on it or the workload names it (`sequestra.dev/kafka-topics: "orders, tmp-*"`,
  exact names or prefixes ending in *): a workload that creates topics in a loop declares their prefix.
- Kubernetes (the listing of the interval): pods per phase, Spark executors lost lately.

A workload none of whose groups or topics is known has no Kafka value ("unknown"), never a 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sequestra.model.kinds import SPARK_APPLICATION
from sequestra.model.workload import WorkloadRef
from sequestra.signals.attribution import Attribution
from sequestra.signals.context import consumer_groups_of
from sequestra.signals.kafka import KafkaSnapshot
from sequestra.signals.kubernetes import ClusterSnapshot

KAFKA_TOPICS_ANNOTATION = "sequestra.dev/kafka-topics"


def declared_topics(obj: Mapping[str, object], topics: Iterable[str]) -> set[str]:
    """The topics of `topics` the workload's annotation names, exactly or by a prefix ending in *."""
    meta = obj.get("metadata")
    annotations = (meta.get("annotations") if isinstance(meta, Mapping) else None) or {}
    declared = [t.strip() for t in str(annotations.get(KAFKA_TOPICS_ANNOTATION, "")).split(",") if t.strip()]
    if not declared:
        return set()
    exact = {t for t in declared if not t.endswith("*")}
    prefixes = [t[:-1] for t in declared if t.endswith("*") and len(t) > 1]
    return {t for t in topics if t in exact or any(t.startswith(p) for p in prefixes)}


def kafka_values(snapshot: KafkaSnapshot | None, attribution: Attribution,
                 names: Iterable[str]) -> dict[WorkloadRef, dict[str, float]]:
    """`kafka_rebalance_rate`, `kafka_consumer_lag` and `kafka_partition_count` per workload (of `names`)."""
    wanted = set(names)
    values: dict[WorkloadRef, dict[str, float]] = {}
    if snapshot is None or not snapshot.reachable or not wanted:
        return values
    # Each group's owners once (not each workload's groups by asking about every group: attributing a client
    # id can scan every pod, and a policy may cover thousands of workloads).
    owned: dict[WorkloadRef, set[str]] = {}
    for name, observed in snapshot.groups.items():
        for client_id in observed.client_ids or observed.last_client_ids:
            owner = attribution.kafka_client(client_id)
            if owner is not None:
                owned.setdefault(owner, set()).add(name)
    for ref, obj in attribution.workloads.items():
        names = owned.get(ref, set()) | set(consumer_groups_of(ref, attribution, {}))  # {}: declared ones only
        groups = [snapshot.groups[g] for g in sorted(names) if g in snapshot.groups]
        own: dict[str, float] = {}
        rates = [g.rebalances_per_min for g in groups if g.rebalances_per_min is not None]
        if "kafka_rebalance_rate" in wanted and rates:
            own["kafka_rebalance_rate"] = sum(rates)
        lags = [g.verdict.total_lag for g in groups if g.verdict.total_lag is not None]
        if "kafka_consumer_lag" in wanted and lags:
            own["kafka_consumer_lag"] = float(sum(lags))
        topics = {topic for g in groups for topic, _ in g.offsets} | declared_topics(obj, snapshot.topics)
        topics &= set(snapshot.topics)
        if "kafka_partition_count" in wanted and topics:
            own["kafka_partition_count"] = float(sum(snapshot.topics[t] for t in topics))
        if own:
            values[ref] = own
    return values


def kubernetes_values(snapshot: ClusterSnapshot, names: Iterable[str]) -> dict[WorkloadRef, dict[str, float]]:
    """`pods_pending` per workload: every listed workload has a value, 0 when none of its pods waits; and
    `spark_executor_losses` and `spark_executors` (running executor pods) per SparkApplication (0 when none
    was lost lately, or none runs; other kinds have neither)."""
    wanted = set(names)
    values: dict[WorkloadRef, dict[str, float]] = {}
    if "pods_pending" in wanted:
        for ref in snapshot.attribution.workloads:
            values[ref] = {"pods_pending": float(snapshot.pod_pending.get(ref, 0))}
    if "spark_executor_losses" in wanted:
        for ref, lost in snapshot.spark_executor_losses.items():
            values.setdefault(ref, {})["spark_executor_losses"] = float(lost)
    if "spark_executors" in wanted:
        for ref in snapshot.attribution.workloads:
            if ref.kind == SPARK_APPLICATION.kind:
                values.setdefault(ref, {})["spark_executors"] = float(snapshot.spark_executors.get(ref, 0))
    return values
