"""Which workload a signal belongs to. Pure: built from listed objects, queried per series.

A pod is attributed through its controlling owner chain (Pod → ReplicaSet → Deployment, Pod → Job →
CronJob, Pod → StatefulSet, Pod → SparkApplication). A Kafka client is attributed by what the workload
declares (annotations below), or, failing that, by its client.id being the name of one of the workload's
pods (the convention `client.id = $(POD_NAME)`). Anything else stays unattributed: reported, never acted on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sequestra.model.workload import WorkloadRef

# Workloads declare their Kafka identity on the workload object (see docs/KAFKA.md).
KAFKA_PRINCIPAL_ANNOTATION = "sequestra.dev/kafka-principal"
KAFKA_CLIENT_ID_ANNOTATION = "sequestra.dev/kafka-client-id"

def controller_of(meta: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (kind, name) of the owner that controls an object, from its metadata; None when none does."""
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    return (owner["kind"], owner["name"]) if owner else None


@dataclass
class Attribution:
    """Lookup tables from one listing of a namespace set; rebuilt each interval (cheap, and never stale
    for longer than one interval)."""

    pods: dict[tuple[str, str], WorkloadRef] = field(default_factory=dict)
    client_ids: dict[str, WorkloadRef] = field(default_factory=dict)
    client_id_prefixes: list[tuple[str, WorkloadRef]] = field(default_factory=list)
    principals: dict[str, WorkloadRef] = field(default_factory=dict)
    shared_principals: set[str] = field(default_factory=set)
    workloads: dict[WorkloadRef, Mapping[str, Any]] = field(default_factory=dict)
    _pods_by_workload: dict[WorkloadRef, list[str]] | None = field(default=None, repr=False, compare=False)

    def pods_of(self, workload: WorkloadRef) -> list[str]:
        """The workload's pods by name, from an index built once per listing: the loop asks for every held
        workload at every interval, and scanning every pod for each made that pods x holds."""
        if self._pods_by_workload is None:
            index: dict[WorkloadRef, list[str]] = {}
            for (namespace, pod), owner in self.pods.items():
                if owner.namespace == namespace:
                    index.setdefault(owner, []).append(pod)
            self._pods_by_workload = index
        return list(self._pods_by_workload.get(workload, ()))

    @classmethod
    def build(cls, workloads: Iterable[Mapping[str, Any]], owners: Iterable[Mapping[str, Any]],
              pods: Iterable[Mapping[str, Any]]) -> Attribution:
        """workloads: the objects humans manage (a standalone Job included), each with its kind; owners:
        the objects in between (ReplicaSets, a CronJob's Jobs), each with its kind; pods: pods."""
        self = cls()
        by_key: dict[tuple[str, str, str], Mapping[str, Any]] = {}
        for obj in workloads:
            meta = obj["metadata"]
            ref = WorkloadRef(meta["namespace"], obj["kind"], meta["name"])
            self.workloads[ref] = obj
            by_key[(meta["namespace"], obj["kind"], meta["name"])] = obj
            self._declare_kafka(ref, meta.get("annotations") or {})
        intermediate = {(o["metadata"]["namespace"], o["kind"], o["metadata"]["name"]): o for o in owners}
        owned_by_pods = []
        for pod in pods:
            meta = pod["metadata"]
            if meta.get("deletionTimestamp"):
                # Leaving: what a pod still terminating uses says nothing about its workload from now on, and
                # counted beside its replacement it doubles the workload's memory at the end of every rollout.
                continue
            owner = controller_of(meta)
            if owner is not None and owner[0] == "Pod":
                owned_by_pods.append((meta["namespace"], meta["name"], owner[1]))
                continue
            owner_ref = self._walk(meta["namespace"], owner, by_key, intermediate)
            if owner_ref is not None:
                self.pods[(meta["namespace"], meta["name"])] = owner_ref
        # Spark makes the driver pod the owner of its executors: they belong where the driver does.
        for namespace, name, driver in owned_by_pods:
            if (namespace, driver) in self.pods:
                self.pods[(namespace, name)] = self.pods[(namespace, driver)]
        return self

    def _declare_kafka(self, ref: WorkloadRef, annotations: Mapping[str, str]) -> None:
        principal = annotations.get(KAFKA_PRINCIPAL_ANNOTATION)
        # Declared client ids are authoritative: other clients of the same principal (in namespaces this
        # policy does not see) are not this workload's traffic, so the principal attributes nothing then.
        if principal and not annotations.get(KAFKA_CLIENT_ID_ANNOTATION, "").strip():
            if principal in self.principals and self.principals[principal] != ref:
                self.shared_principals.add(principal)  # two workloads share it: it names neither
            self.principals.setdefault(principal, ref)
        for client_id in filter(None, (c.strip() for c in annotations.get(KAFKA_CLIENT_ID_ANNOTATION, "").split(","))):
            if client_id.endswith("*"):
                self.client_id_prefixes.append((client_id[:-1], ref))
            else:
                self.client_ids[client_id] = ref

    def _walk(self, namespace: str, owner: tuple[str, str] | None,
              top: Mapping[tuple[str, str, str], Mapping[str, Any]],
              intermediate: Mapping[tuple[str, str, str], Mapping[str, Any]]) -> WorkloadRef | None:
        for _ in range(4):  # Pod → ReplicaSet → Deployment is the longest chain we follow
            if owner is None:
                return None
            kind, name = owner
            if (namespace, kind, name) in top:
                return WorkloadRef(namespace, kind, name)
            parent = intermediate.get((namespace, kind, name))
            if parent is None:
                return None
            owner = controller_of(parent["metadata"])
        return None

    def pod(self, namespace: str, name: str) -> WorkloadRef | None:
        return self.pods.get((namespace, name))

    def kafka_client(self, client_id: str, principal: str | None = None) -> WorkloadRef | None:
        """Declared client ids first, then declared prefixes (longest wins), then a dedicated principal,
        then the pod-name convention. A principal shared by several workloads attributes nothing."""
        if client_id in self.client_ids:
            return self.client_ids[client_id]
        own_pod = self._pod_owner(client_id)
        prefixed = [(len(p), ref) for p, ref in self.client_id_prefixes if p and client_id.startswith(p)]
        if prefixed:
            ref = max(prefixed, key=lambda item: item[0])[1]
            # Client ids are global to the Kafka cluster, namespaces are not. When the workload's own pods
            # follow the prefix (client.id = pod name), a matching id that is none of its pods belongs to
            # a namespace this policy does not see, not to this workload.
            if own_pod == ref or not self._pods_follow_prefix(ref):
                return ref
            return None
        if principal and principal in self.principals and principal not in self.shared_principals:
            return self.principals[principal]
        return own_pod

    def _pod_owner(self, pod_name: str) -> WorkloadRef | None:
        matches = {ref for (_, pod), ref in self.pods.items() if pod == pod_name}
        return matches.pop() if len(matches) == 1 else None

    def _pods_follow_prefix(self, workload: WorkloadRef) -> bool:
        own = [pod for (_, pod), ref in self.pods.items() if ref == workload]
        mine = [p for p, ref in self.client_id_prefixes if ref == workload]
        return any(pod.startswith(prefix) for pod in own for prefix in mine)

