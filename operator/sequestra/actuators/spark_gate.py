"""Capping a running Spark application's executors without touching its spec: pure planning.

The kubeflow spark-operator answers any change of a running SparkApplication's spec but `suspend` by
deleting the run and submitting it again, so a cap written into `dynamicAllocation.maxExecutors` restarts
the job from the beginning: a quarantine, not a throttle. Spark itself cannot be told a new ceiling from
outside either. What holds it is the scheduler: executor pods are made by the driver, and an admission
policy that gives every new executor pod of the application a scheduling gate keeps them from running.

Refusing the pods instead kills the application (Spark 4 counts each refused create as an executor failure
and stops the driver at `spark.executor.maxNumFailures`). A gated pod is created, so Spark counts it as
pending, asks for no more, and counts no failure. The cap is then kept exact by the hold's interval
(cap_moves): executors beyond the cap are stopped (Spark re-runs their tasks and asks for replacements,
which stay gated), and when an executor ends below the cap, a gated one is let through. Release drops the
policy and lifts the gate from every pod still waiting behind it; the spec was never changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sequestra.model.sequestration import SEQUESTRATION_ANNOTATION

ADMISSION_GROUP_VERSION = "admissionregistration.k8s.io/v1"
POLICY_KIND = "MutatingAdmissionPolicy"
BINDING_KIND = "MutatingAdmissionPolicyBinding"
# The gate's name on a waiting executor pod. One hold per workload, so one name serves every hold; the
# policy's name carries the hold.
EXECUTOR_GATE = "sequestra.dev/executor-cap"
# As Spark labels the executor pods it makes, and the spark-operator its applications' pods.
ROLE_LABEL = "spark-role"
EXECUTOR_ID_LABEL = "spark-exec-id"
APP_NAME_LABEL = "sparkoperator.k8s.io/app-name"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
_ENDED_PHASES = ("Succeeded", "Failed")


def gate_policy_name(sequestration: str, namespace: str) -> str:
    """Cluster-scoped, so the hold's namespace is part of the name."""
    return f"sequestra-{namespace}-{sequestration}"[:253].rstrip("-.")


def executor_selector(app: str) -> str:
    return f"{ROLE_LABEL}=executor,{APP_NAME_LABEL}={app}"


def gate_policy(name: str, namespace: str, app: str, sequestration: str) -> dict[str, Any]:
    """The policy gating new executor pods of SparkApplication `app` (matched in its binding's namespace).

    failurePolicy Ignore: when the policy cannot be evaluated, the pod goes through ungated (the hold's
    interval stops it if it exceeds the cap) rather than being refused, which Spark counts as a failure."""
    condition = (f"'{ROLE_LABEL}' in object.metadata.labels && object.metadata.labels['{ROLE_LABEL}'] == 'executor'"
                 f" && '{APP_NAME_LABEL}' in object.metadata.labels"
                 f" && object.metadata.labels['{APP_NAME_LABEL}'] == '{app}'")
    gate = f'Object{{spec: Object.spec{{schedulingGates: [Object.spec.schedulingGates{{name: "{EXECUTOR_GATE}"}}]}}}}'
    return {
        "apiVersion": ADMISSION_GROUP_VERSION,
        "kind": POLICY_KIND,
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "sequestra"},
                     "annotations": {SEQUESTRATION_ANNOTATION: f"{namespace}/{sequestration}"}},
        "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                    "operations": ["CREATE"], "resources": ["pods"]}]},
            "matchConditions": [{"name": "executor-of-the-held-application",
                                 "expression": f"has(object.metadata.labels) && {condition}"}],
            "failurePolicy": "Ignore",
            "reinvocationPolicy": "Never",
            "mutations": [{"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": gate}}],
        },
    }


def gate_binding(name: str, namespace: str, sequestration: str) -> dict[str, Any]:
    return {
        "apiVersion": ADMISSION_GROUP_VERSION,
        "kind": BINDING_KIND,
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "sequestra"},
                     "annotations": {SEQUESTRATION_ANNOTATION: f"{namespace}/{sequestration}"}},
        "spec": {"policyName": name,
                 "matchResources": {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}}},
    }


def _holds(current: Any, desired: Any) -> bool:
    """Whether `current` has everything `desired` sets: the API server fills in defaults (matchPolicy, empty
    selectors, a rule's scope), which are not an edit."""
    if isinstance(desired, Mapping):
        return isinstance(current, Mapping) and all(k in current and _holds(current[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(current, list) and len(current) == len(desired) and \
            all(_holds(c, d) for c, d in zip(current, desired, strict=True))
    return bool(current == desired)


def gate_drift(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether a gate object is gone or was edited so that it no longer does what the hold needs: a field
    the hold set changed, or a default the API server filled in was narrowed (a selector, a scope)."""
    if current is None:
        return True
    spec = current.get("spec") or {}
    constraints = spec.get("matchConstraints") or {}
    narrowed = any(constraints.get(key) not in (None, {}) for key in ("namespaceSelector", "objectSelector")) \
        or any(rule.get("scope", "*") != "*" for rule in constraints.get("resourceRules") or [])
    return narrowed or not _holds(spec, desired["spec"])


@dataclass(frozen=True)
class CapMoves:
    """What keeps an application at its cap: executors to stop (newest first) and gated ones to let run."""

    stop: tuple[str, ...] = ()
    let_through: tuple[str, ...] = ()
    running: int = 0  # executors scheduled (not gated) and not ended, before the moves
    waiting: int = 0  # executors behind the gate, before the moves


def gated(pod: Mapping[str, Any]) -> bool:
    return any(g.get("name") == EXECUTOR_GATE for g in (pod.get("spec") or {}).get("schedulingGates") or [])


def _executor_id(pod: Mapping[str, Any]) -> tuple[int, str]:
    meta = pod.get("metadata") or {}
    label = (meta.get("labels") or {}).get(EXECUTOR_ID_LABEL, "")
    return (int(label) if str(label).isdigit() else 0, str(meta.get("creationTimestamp") or ""))


def cap_moves(pods: Sequence[Mapping[str, Any]], cap: int) -> CapMoves:
    """The moves that leave exactly `cap` of an application's executors free to run, given its executor pods
    as listed. Spark's newest executors go first (the highest executor id, as its own allocator releases
    them); the oldest waiting ones are let through first, in the order Spark asked for them. Pods being
    deleted or ended count for neither side."""
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in _ENDED_PHASES]
    free = sorted((p for p in live if not gated(p)), key=_executor_id)
    waiting = sorted((p for p in live if gated(p)), key=_executor_id)
    stop = tuple(str(p["metadata"]["name"]) for p in reversed(free[cap:]))
    room = max(0, cap - len(free))
    let_through = tuple(str(p["metadata"]["name"]) for p in waiting[:room])
    return CapMoves(stop=stop, let_through=let_through, running=len(free), waiting=len(waiting))


def ungate_patch(pod: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The JSON patch lifting the hold's gate from a pod, guarded by a `test` of the gate list as read (a
    concurrent edit fails the patch rather than removing another gate); None when it has no such gate."""
    gates = list((pod.get("spec") or {}).get("schedulingGates") or [])
    index = next((i for i, g in enumerate(gates) if g.get("name") == EXECUTOR_GATE), None)
    if index is None:
        return None
    return [{"op": "test", "path": "/spec/schedulingGates", "value": gates},
            {"op": "remove", "path": f"/spec/schedulingGates/{index}"}]
