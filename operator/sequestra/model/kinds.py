"""The Kubernetes kinds Sequestra reads or writes, one row each: what serves it, where its pods' template
lives, which actions apply to it. Pure.

Everything else asks this table rather than keeping its own list: the actuators address objects by it
(actuators/kubernetes.py), the planner refuses an action a row does not list with `not_applicable_reason`,
the message a hold's status condition shows (actuators/plans.py, policy/lifecycle.py), and the signal readers
list workloads by it (signals/kubernetes.py). tests/unit/test_kinds.py holds the planner to the table, action
by action and kind by kind, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sequestra.model.sequestration import ActionType


class Role(StrEnum):
    WORKLOAD = "workload"  # a human manages it: a Sequestration holds it
    POD = "pod"  # a Sequestration may name one: it is resolved to the workload owning it
    INTERMEDIATE = "intermediate"  # between a workload and its pods, walked past (a Deployment's ReplicaSet)
    CREATED = "created"  # what Sequestra creates itself while holding (an isolating NetworkPolicy)


@dataclass(frozen=True)
class KindInfo:
    kind: str
    group: str  # "" for the core API group
    version: str
    plural: str  # the API resource
    role: Role
    pod_template: str | None = None  # JSON pointer to its pod template (metadata and spec); None: it has none
    actions: frozenset[ActionType] = frozenset()  # the actions that apply to it
    optional: bool = False  # served by a CRD that may not be installed: a 404 on listing means "none here"
    stops_owner_walk: bool = False  # walking a pod's owners ends here even when something owns it
    # Its pod template cannot change once created (a Job): a throttle resizes its running pods in place.
    template_immutable: bool = False
    watched: bool = False  # signals are attributed to it and a policy may select it
    owner_label: str | None = None  # the label naming it on kube-state-metrics series and in alert rules

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> tuple[str, str, str]:
        """(group, version, plural), as the Kubernetes client's custom-object calls take them."""
        return self.group, self.version, self.plural

    @property
    def pod_spec_path(self) -> str | None:
        return None if self.pod_template is None else f"{self.pod_template}/spec"

    @property
    def pod_labels_path(self) -> str | None:
        return None if self.pod_template is None else f"{self.pod_template}/metadata/labels"


_KAFKA = frozenset({ActionType.QUOTA, ActionType.DENY_WRITE})  # act on the workload's declared Kafka identity
_SPARK_GROUP = "sparkoperator.k8s.io"  # Kubeflow spark-operator's CRDs

DEPLOYMENT = KindInfo(
    "Deployment", "apps", "v1", "deployments", Role.WORKLOAD, pod_template="/spec/template",
    actions=frozenset({ActionType.SCALE, ActionType.THROTTLE, ActionType.ISOLATE, ActionType.LABEL}) | _KAFKA,
    stops_owner_walk=True, watched=True, owner_label="deployment")
STATEFULSET = KindInfo(
    "StatefulSet", "apps", "v1", "statefulsets", Role.WORKLOAD, pod_template="/spec/template",
    actions=frozenset({ActionType.SCALE, ActionType.THROTTLE, ActionType.ISOLATE, ActionType.LABEL}) | _KAFKA,
    stops_owner_walk=True, watched=True, owner_label="statefulset")
# A Job a CronJob owns is walked past to the CronJob: the walk does not stop at a Job.
JOB = KindInfo(
    "Job", "batch", "v1", "jobs", Role.WORKLOAD, pod_template="/spec/template",
    actions=frozenset({ActionType.SUSPEND, ActionType.THROTTLE, ActionType.ISOLATE, ActionType.LABEL}) | _KAFKA,
    template_immutable=True, watched=True, owner_label="job_name")
CRONJOB = KindInfo(
    "CronJob", "batch", "v1", "cronjobs", Role.WORKLOAD, pod_template="/spec/jobTemplate/spec/template",
    actions=frozenset({ActionType.SUSPEND, ActionType.THROTTLE, ActionType.ISOLATE, ActionType.LABEL}) | _KAFKA,
    stops_owner_walk=True, watched=True, owner_label="cronjob")
# No pod template: spark-operator makes the driver pod, Spark the executors. Scale caps its executors and
# throttle lowers their CPU limit (the spec's executor fields); isolate has no pod labels to select by.
SPARK_APPLICATION = KindInfo(
    "SparkApplication", _SPARK_GROUP, "v1beta2", "sparkapplications", Role.WORKLOAD,
    actions=frozenset({ActionType.SCALE, ActionType.SUSPEND, ActionType.THROTTLE, ActionType.LABEL}) | _KAFKA,
    optional=True, stops_owner_walk=True, watched=True)
# Its runs are SparkApplications, to which pods, signals and caps belong: a schedule is only suspended (or
# marked), which shapes the next run.
SCHEDULED_SPARK_APPLICATION = KindInfo(
    "ScheduledSparkApplication", _SPARK_GROUP, "v1beta2", "scheduledsparkapplications", Role.WORKLOAD,
    actions=frozenset({ActionType.SUSPEND, ActionType.LABEL}) | _KAFKA, optional=True, stops_owner_walk=True)
# Nothing applies to a Pod itself: a Sequestration naming one holds the workload owning it.
POD = KindInfo("Pod", "", "v1", "pods", Role.POD)
REPLICA_SET = KindInfo("ReplicaSet", "apps", "v1", "replicasets", Role.INTERMEDIATE, pod_template="/spec/template")
NETWORK_POLICY = KindInfo("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies", Role.CREATED)

# What an executor cap creates (actuators/spark_gate.py), cluster-scoped: kind -> plural, in
# admissionregistration.k8s.io/v1.
EXECUTOR_GATE_PLURALS = {"MutatingAdmissionPolicy": "mutatingadmissionpolicies",
                         "MutatingAdmissionPolicyBinding": "mutatingadmissionpolicybindings"}

KINDS: tuple[KindInfo, ...] = (DEPLOYMENT, STATEFULSET, JOB, CRONJOB, SPARK_APPLICATION, SCHEDULED_SPARK_APPLICATION,
                               POD, REPLICA_SET, NETWORK_POLICY)
BY_KIND: Mapping[str, KindInfo] = {info.kind: info for info in KINDS}

# Kinds a Sequestration holds.
HELD_KINDS = tuple(info.kind for info in KINDS if info.role is Role.WORKLOAD)
# Kinds a Sequestration's target may name (the CRD's enum, WorkloadKind).
TARGET_KINDS = tuple(info.kind for info in KINDS if info.role in (Role.WORKLOAD, Role.POD))
# Held kinds built on a pod template: their pods can be selected by its labels and their images compared.
TEMPLATE_KINDS = tuple(info.kind for info in KINDS if info.role is Role.WORKLOAD and info.pod_template)
# Held kinds signals are attributed to and a policy selects by default.
WATCHED_KINDS = tuple(info.kind for info in KINDS if info.watched)
INTERMEDIATE_KINDS = tuple(info.kind for info in KINDS if info.role is Role.INTERMEDIATE)
SPARK_KINDS = tuple(info.kind for info in KINDS if info.group == _SPARK_GROUP)


def kind_info(kind: str) -> KindInfo | None:
    return BY_KIND.get(kind)


def kinds_for(action: ActionType) -> tuple[str, ...]:
    """The kinds `action` applies to, in the table's order."""
    return tuple(info.kind for info in KINDS if action in info.actions)


def applicable(action: ActionType, kind: str) -> bool:
    info = BY_KIND.get(kind)
    return info is not None and action in info.actions


def not_applicable_reason(action: ActionType, kind: str) -> str | None:
    """None when `action` applies to `kind`; otherwise what a user reads in the hold's status condition."""
    if applicable(action, kind):
        return None
    allowed = ", ".join(kinds_for(action)) or "no kind"
    article = "an" if kind[:1].upper() in {"A", "E", "I", "O", "U"} else "a"
    return f"{action} does not apply to {article} {kind}: it applies to {allowed}"


def pod_spec(kind: str, obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod spec in `obj`'s pod template; None when its kind has no template or `obj` has none there."""
    info = BY_KIND.get(kind)
    path = None if info is None else info.pod_spec_path
    if path is None:
        return None
    node: Any = obj
    for key in path.split("/")[1:]:  # the table's paths have no segment that needs escaping
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else None
