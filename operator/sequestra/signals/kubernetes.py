"""Kubernetes as a signal source: one listing per interval of what attribution and change detection need.

Raw JSON (no client model objects) keeps a 10k-pod listing cheap. Restarts and OOM kills are read from
pod statuses here too, so they count even where kube-state-metrics is not installed, and so are the pods
waiting in phase Pending (the catalog's `pods_pending`), a Spark application's running executors
(`spark_executors`) and those it lost in the last minutes (`spark_executor_losses`, `signals/spark.py`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from sequestra.model.kinds import BY_KIND, INTERMEDIATE_KINDS, SPARK_APPLICATION, kind_info
from sequestra.model.workload import ChangeEvent, WorkloadRef
from sequestra.signals.attribution import Attribution, controller_of
from sequestra.signals.changes import recent_changes
from sequestra.signals.spark import ExecutorLossWindow, driver_running, failed_executors

SPARK_ROLE_LABEL = "spark-role"  # Spark's label on its driver and executor pods


@dataclass
class ClusterSnapshot:
    attribution: Attribution
    replicasets: dict[tuple[str, str], list[Mapping[str, Any]]] = field(default_factory=dict)  # owner key
    configmaps: dict[str, dict[str, Mapping[str, Any]]] = field(default_factory=dict)  # ns -> name -> obj
    # Secrets are not listed: reading every Secret in a namespace is a privilege an operator should not hold.
    secrets: dict[str, dict[str, Mapping[str, Any]]] = field(default_factory=dict)
    pod_restarts: dict[WorkloadRef, int] = field(default_factory=dict)
    pod_oom_kills: dict[WorkloadRef, int] = field(default_factory=dict)
    pod_pending: dict[WorkloadRef, int] = field(default_factory=dict)  # pods in phase Pending
    # Per SparkApplication: its executor pods running (not being deleted). What it holds of the cluster; the
    # driver makes them, so the pod listing sees them whatever exports Spark's metrics.
    spark_executors: dict[WorkloadRef, int] = field(default_factory=dict)
    spark_executor_losses: dict[WorkloadRef, int] = field(default_factory=dict)  # per SparkApplication, recent
    warnings: list[str] = field(default_factory=list)

    def changes(self, workload: WorkloadRef, since: float) -> list[ChangeEvent]:
        obj = self.attribution.workloads.get(workload)
        if obj is None:
            return []
        return recent_changes(workload, obj, configmaps=self.configmaps.get(workload.namespace, {}),
                              secrets=self.secrets.get(workload.namespace, {}),
                              revisions=self.replicasets.get((workload.namespace, workload.name), []), since=since)


class ClusterReader:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._api = api_client
        self._executor_losses = ExecutorLossWindow()  # across intervals: losses are new FAILED entries

    def _list(self, group: str, version: str, plural: str, namespace: str,
              query: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        prefix = "/api/v1" if group == "" else f"/apis/{group}/{version}"
        request = self._api.param_serialize("GET", f"{prefix}/namespaces/{namespace}/{plural}",
                                            query_params=query or [],
                                            header_params={"Accept": "application/json"},
                                            auth_settings=["BearerToken"])
        response = self._api.call_api(*request)
        response.read()
        if not 200 <= response.status < 300:
            raise client.ApiException(status=response.status, reason=response.reason)
        return list(json.loads(response.data or b"{}").get("items", []))

    def snapshot(self, namespaces: list[str], kinds: tuple[str, ...], now: float | None = None) -> ClusterSnapshot:
        workloads: list[dict[str, Any]] = []
        owners: list[dict[str, Any]] = []
        pods: list[dict[str, Any]] = []
        snapshot = ClusterSnapshot(attribution=Attribution())
        for namespace in namespaces:
            for kind in kinds:
                info = kind_info(kind)
                if info is None or not info.watched:  # the workloads humans manage that signals are read for
                    continue
                try:
                    items = self._list(*info.resource, namespace)
                except client.ApiException as exc:
                    if exc.status == 404:  # the CRD (SparkApplication) is not installed: nothing to list
                        continue
                    raise
                for item in items:
                    item["kind"] = kind
                    # A CronJob's Jobs sit between it and its pods; humans manage the CronJob. An owner that
                    # does not control (a ScheduledSparkApplication's runs carry no controller flag) leaves the
                    # object a workload of its own: the run is what holds executors, and what a cap holds.
                    (owners if controller_of(item["metadata"]) else workloads).append(item)
            # The objects between workloads and their pods (a Deployment's ReplicaSets).
            for kind in INTERMEDIATE_KINDS:
                for item in self._list(*BY_KIND[kind].resource, namespace):
                    item["kind"] = kind
                    owners.append(item)
                    owner = controller_of(item["metadata"])
                    if owner:
                        snapshot.replicasets.setdefault((namespace, owner[1]), []).append(item)
            pods += self._list("", "v1", "pods", namespace)
            snapshot.configmaps[namespace] = {c["metadata"]["name"]: {"metadata": c["metadata"]}
                                              for c in self._list("", "v1", "configmaps", namespace)}
        snapshot.attribution = Attribution.build(workloads, owners, pods)
        for pod in pods:
            ref = snapshot.attribution.pod(pod["metadata"]["namespace"], pod["metadata"]["name"])
            if ref is None:
                continue
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Pending":
                snapshot.pod_pending[ref] = snapshot.pod_pending.get(ref, 0) + 1
            if ref.kind == SPARK_APPLICATION.kind:
                running_executor = phase == "Running" and not pod["metadata"].get("deletionTimestamp") and \
                    (pod["metadata"].get("labels") or {}).get(SPARK_ROLE_LABEL) == "executor"
                snapshot.spark_executors[ref] = snapshot.spark_executors.get(ref, 0) + int(running_executor)
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            snapshot.pod_restarts[ref] = snapshot.pod_restarts.get(ref, 0) + sum(
                int(s.get("restartCount", 0)) for s in statuses)
            terminations = [(s.get("lastState") or {}).get("terminated") or {} for s in statuses]
            snapshot.pod_oom_kills[ref] = snapshot.pod_oom_kills.get(ref, 0) + sum(
                1 for t in terminations if t.get("reason") == "OOMKilled")
        applications = {ref: obj for ref, obj in snapshot.attribution.workloads.items()
                        if ref.kind == SPARK_APPLICATION.kind}
        snapshot.spark_executor_losses = self._executor_losses.observe(
            time.time() if now is None else now, {ref: failed_executors(obj) for ref, obj in applications.items()},
            running=[ref for ref, obj in applications.items() if driver_running(obj)])
        return snapshot

    def warning_events(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's Warning events (read once per incident, for its evidence, not every interval)."""
        return self._list("", "v1", "events", namespace, [("fieldSelector", "type=Warning")])
