"""What the diagnoser is told about a workload besides its signals: a spec excerpt, Spark allocation,
its Kafka consumer groups and its Warning events. Pure: built from objects and snapshots already read,
so the evidence of an incident is what the operator saw in the interval it decided in.

Every function returns plain JSON-able dicts in the shape the evidence pack and the runbooks read
(`diagnosis/evidence.py`, `diagnosis/runbooks.py`), and None / empty when there is nothing known: an
unknown is left out, never filled with a guess.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sequestra.model.kinds import SCHEDULED_SPARK_APPLICATION, SPARK_KINDS, pod_spec
from sequestra.model.workload import WorkloadRef
from sequestra.scoring.consumer_groups import GroupVerdict, PartitionStatus
from sequestra.signals.attribution import Attribution
from sequestra.signals.spark import failed_executors, loss_reasons

# A workload may name the consumer groups it runs when its members' client ids do not say so.
KAFKA_CONSUMER_GROUP_ANNOTATION = "sequestra.dev/kafka-consumer-group"
# Annotations too large or too noisy to put in front of a diagnoser.
_SKIPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
_MAX_ANNOTATION_CHARS = 300
_STUCK = (PartitionStatus.STALL, PartitionStatus.STOP)


def spec_excerpt(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Images, replicas, container resources, the owner's annotations and, for a Deployment or
    StatefulSet, whether a rollout is in progress."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    excerpt: dict[str, Any] = {"kind": kind, "name": meta.get("name")}
    if spec.get("replicas") is not None:
        excerpt["replicas"] = spec["replicas"]
    pods = pod_spec(kind, obj)
    if pods is not None:
        containers = list(pods.get("containers") or [])
        excerpt["images"] = sorted({str(c.get("image")) for c in containers if c.get("image")})
        resources = {str(c.get("name")): c["resources"] for c in containers if c.get("resources")}
        if resources:
            excerpt["resources"] = resources
    if kind in SPARK_KINDS:
        template = (spec.get("template") or {}) if kind == SCHEDULED_SPARK_APPLICATION.kind else spec
        if template.get("image"):
            excerpt["images"] = [str(template["image"])]
        sizes = {role: {k: v for k, v in (template.get(role) or {}).items()
                        if k in ("cores", "coreLimit", "memory", "instances")} for role in ("driver", "executor")}
        if any(sizes.values()):
            excerpt["resources"] = {role: size for role, size in sizes.items() if size}
    annotations = {k: (v if len(v) <= _MAX_ANNOTATION_CHARS else v[:_MAX_ANNOTATION_CHARS] + "…")
                   for k, v in (meta.get("annotations") or {}).items()
                   if k not in _SKIPPED_ANNOTATIONS and isinstance(v, str)}
    if annotations:
        excerpt["annotations"] = annotations
    rollout = _rollout(kind, obj)
    if rollout is not None:
        excerpt["rollout"] = rollout
    return excerpt


def _rollout(kind: str, obj: Mapping[str, Any]) -> dict[str, Any] | None:
    if kind not in ("Deployment", "StatefulSet"):
        return None
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    if not status:
        return None  # never reconciled: unknown, not "no rollout"
    wanted = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    stale_generation = int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0)
    behind = updated < wanted or int(status.get("replicas") or 0) > updated
    if kind == "StatefulSet":
        behind = behind or status.get("currentRevision") != status.get("updateRevision")
    return {"inProgress": bool(stale_generation or behind), "updatedReplicas": updated, "replicas": wanted}


def spark_context(obj: Mapping[str, Any], executors_now: float | None,
                  events: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any] | None:
    """A SparkApplication's allocation: executors now (the spark_executors signal, else the executor
    states the spark-operator reports), its ceiling, dynamic allocation, and executor losses: by reason
    from the spark-operator's recent SparkExecutorFailed events (`events`, as `warning_events` merges
    them), else as the FAILED executors of its status, whose reason is not known."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    allocation = spec.get("dynamicAllocation") or {}
    dynamic = bool(allocation.get("enabled"))
    instances = (spec.get("executor") or {}).get("instances")
    cap = allocation.get("maxExecutors") if dynamic else instances
    states = status.get("executorState") or {}
    executors = executors_now
    if executors is None or (isinstance(executors, float) and math.isnan(executors)):
        executors = sum(1 for s in states.values() if s == "RUNNING") if states else None
    context: dict[str, Any] = {"application": (obj.get("metadata") or {}).get("name"),
                               "dynamicAllocation": dynamic}
    if executors is not None:
        context["executors"] = round(executors)
    if cap is not None:
        context["maxExecutors"] = int(cap)
    if dynamic and allocation.get("minExecutors") is not None:
        context["minExecutors"] = int(allocation["minExecutors"])
    reasons = loss_reasons(events)
    failed = len(failed_executors(obj))
    if reasons:
        context["executorLosses"] = reasons
    elif failed:
        context["executorLosses"] = {"FAILED": failed}
    state = (status.get("applicationState") or {}).get("state")
    if state:
        context["state"] = state
    return context


def consumer_groups_of(ref: WorkloadRef, attribution: Attribution, members: Mapping[str, Iterable[str]]) -> list[str]:
    """The groups a workload consumes in: those it declares by annotation, and those whose members'
    client ids attribute to it (`members`: group -> client ids of its current members)."""
    obj = attribution.workloads.get(ref) or {}
    declared = (obj.get("metadata") or {}).get("annotations", {}).get(KAFKA_CONSUMER_GROUP_ANNOTATION, "")
    groups = {g.strip() for g in declared.split(",") if g.strip()}
    for group, client_ids in members.items():
        if any(attribution.kafka_client(cid) == ref for cid in client_ids):
            groups.add(group)
    return sorted(groups)


def consumer_group_context(verdict: GroupVerdict, *, state: str | None = None, members: int | None = None,
                           rebalances: int | None = None, lag_trend: str | None = None) -> dict[str, Any]:
    """One group as the evidence pack reads it: its worst partition status (Burrow), lag, trend,
    partitions and the stuck ones."""
    context: dict[str, Any] = {"group": verdict.group, "status": str(verdict.worst),
                               "severity": str(verdict.status), "partitions": len(verdict.partitions)}
    if verdict.total_lag is not None:
        context["lag"] = verdict.total_lag
    if lag_trend is not None:
        context["lagTrend"] = lag_trend
    stuck = [f"{p.topic}[{p.partition}]" for p in verdict.partitions if p.status in _STUCK]
    if verdict.partitions:
        context["stuckPartitions"] = stuck
    worst = [p.reason for p in verdict.partitions if p.status is verdict.worst]
    if worst and verdict.worst is not PartitionStatus.OK:
        context["reason"] = worst[0]
    if verdict.reason:
        context["reason"] = verdict.reason
    for key, value in (("state", state), ("members", members), ("rebalancesSeen", rebalances)):
        if value is not None:
            context[key] = value
    return context


def warning_events(ref: WorkloadRef, attribution: Attribution, events: Iterable[Mapping[str, Any]],
                   since: float) -> list[dict[str, Any]]:
    """Warning events about the workload or its pods seen since `since` (epoch s), one per reason and
    message with their counts added up (a crash loop is one item with count 40, not 40 items)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events:
        if event.get("type") != "Warning":
            continue
        involved = event.get("involvedObject") or event.get("regarding") or {}
        namespace = involved.get("namespace") or (event.get("metadata") or {}).get("namespace")
        if namespace != ref.namespace:
            continue
        is_ours = (involved.get("kind") == ref.kind and involved.get("name") == ref.name) or (
            involved.get("kind") == "Pod" and attribution.pod(namespace, str(involved.get("name"))) == ref)
        if not is_ours:
            continue
        last = _event_time(event)
        if last is not None and last < since:
            continue
        reason, message = str(event.get("reason", "")), str(event.get("message") or event.get("note") or "")
        key = (reason, _generic(message))
        entry = merged.setdefault(key, {"reason": reason, "message": message[:300], "count": 0})
        entry["count"] += int(event.get("count") or (event.get("series") or {}).get("count") or 1)
    return sorted(merged.values(), key=lambda e: (-e["count"], e["reason"]))


def _generic(message: str) -> str:
    # Pod names differ per pod; the same failure on five pods is one item.
    return "".join("#" if ch.isdigit() else ch for ch in message)[:120]


def _event_time(event: Mapping[str, Any]) -> float | None:
    meta = event.get("metadata") or {}
    for value in (event.get("lastTimestamp"), event.get("eventTime"), event.get("firstTimestamp"),
                  meta.get("creationTimestamp")):
        if value:
            try:
                return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None
