"""Pure planning of Kubernetes actions as field changes, and of their exact undo.

An action never writes blindly: it is planned against the object as read into a list of FieldChanges
(JSON pointer, value before, value after), recorded as prior state *before* anything is written (or in the
same patch, on the target: recorded_patch), and then applied as a JSON patch whose `test` operations refuse
to clobber a concurrent edit. Restore runs the same list backwards and only touches a field that still holds
the value Sequestra put there.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from sequestra.model import kinds
from sequestra.model.quantity import parse_quantity
from sequestra.model.sequestration import (
    FLUX_RECONCILE_ANNOTATION,
    PRIOR_STATE_ANNOTATION_PREFIX,
    SEQUESTERED_LABEL,
    SEQUESTRATION_ANNOTATION,
    ActionSpec,
    ActionType,
    FieldChange,
)

_MISSING = object()



class PlanError(ValueError):
    """The action cannot apply to this object (wrong kind, nothing to select pods by)."""


def check_applicable(action: ActionType, kind: str) -> kinds.KindInfo:
    """The kind's row in the table of kinds (model/kinds.py), or PlanError when `action` does not apply to it."""
    info = kinds.kind_info(kind)
    if info is None or action not in info.actions:
        raise PlanError(kinds.not_applicable_reason(action, kind))
    return info


def escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def _segments(path: str) -> list[str]:
    return [s.replace("~1", "/").replace("~0", "~") for s in path.split("/")[1:]]


def get_pointer(obj: Any, path: str) -> Any:
    """The value at a JSON pointer, or _MISSING."""
    current = obj
    for segment in _segments(path):
        if isinstance(current, list):
            index = int(segment)
            if index >= len(current):
                return _MISSING
            current = current[index]
        elif isinstance(current, dict) and segment in current:
            current = current[segment]
        else:
            return _MISSING
    return current


def exists(obj: Any, path: str) -> bool:
    return get_pointer(obj, path) is not _MISSING


def change_to(obj: dict[str, Any], path: str, after: Any) -> FieldChange | None:
    """The change that makes `path` hold `after`, or None if it already does.

    When parents are missing, the change is recorded at the highest missing one (a JSON patch `add`
    cannot create intermediate objects), with the rest of the path folded into its value."""
    segments = _segments(path)
    for depth in range(1, len(segments) + 1):
        prefix = "/" + "/".join(escape(s) for s in segments[:depth])
        if not exists(obj, prefix):
            value: Any = after
            for segment in reversed(segments[depth:]):
                value = {segment: value}
            return FieldChange(path=prefix, existed=False, before=None, after=value)
    before = get_pointer(obj, path)
    if before == after:
        return None
    return FieldChange(path=path, existed=True, before=before, after=after)


def plan_changes(action: ActionSpec, kind: str, obj: dict[str, Any], sequestration: str) -> list[FieldChange]:
    """The field changes `action` makes to workload `obj` of `kind`. An isolate changes no field (it creates a
    NetworkPolicy), nor does a Kafka action (the Kafka actuator plans it); PlanError when `action` does not
    apply to `kind` (model/kinds.py)."""
    info = check_applicable(action.type, kind)
    wanted: list[tuple[str, Any]] = []
    if action.type is ActionType.SCALE and kind == kinds.SPARK_APPLICATION.kind:
        _check_executor_cap(action.replicas or 0)  # its executors are gated, its spec untouched (spark_gate)
    elif action.type is ActionType.SCALE:
        wanted.append(("/spec/replicas", action.replicas))
    elif action.type is ActionType.SUSPEND:
        wanted.append(("/spec/suspend", True))
    elif action.type is ActionType.THROTTLE and kind == kinds.SPARK_APPLICATION.kind:
        _check_executor_throttle(action)  # its running executors are resized in place (plan_pod_resize)
    elif action.type is ActionType.THROTTLE and not info.template_immutable:
        # An immutable template (a Job's) is left untouched: its running pods are resized in place instead
        # (plan_pod_resize).
        wanted.extend(_throttle_targets(action, info, obj))
    elif action.type is ActionType.LABEL:
        wanted.append((f"/metadata/labels/{escape(SEQUESTERED_LABEL)}", "true"))
        wanted.append((f"/metadata/annotations/{escape(SEQUESTRATION_ANNOTATION)}", sequestration))
        wanted.append((f"/metadata/annotations/{escape(FLUX_RECONCILE_ANNOTATION)}", "disabled"))
    return _changes_to(obj, wanted)[0]


def _changes_to(obj: dict[str, Any], wanted: list[tuple[str, Any]]) -> tuple[list[FieldChange], dict[str, Any]]:
    """The changes that give `obj` each wanted (path, value), and the object as they leave it."""
    changes: list[FieldChange] = []
    scratch = copy.deepcopy(obj)
    for path, after in wanted:
        change = change_to(scratch, path, after)
        if change is not None:
            changes.append(change)
            apply_changes(scratch, [change])  # later paths may share a parent just created
    return changes, scratch


def _throttle_targets(action: ActionSpec, info: kinds.KindInfo, obj: dict[str, Any]) -> list[tuple[str, Any]]:
    """Lower (never raise) each container's limits; lower a request above the new limit with it, as
    the API server refuses a request greater than its limit."""
    pod_spec_path = info.pod_spec_path
    if pod_spec_path is None:
        raise PlanError(f"a {info.kind} has no pod template to throttle")
    containers = get_pointer(obj, pod_spec_path + "/containers")
    if containers is _MISSING or not containers:
        raise PlanError(f"the {info.kind} has no containers to throttle")
    return _lowered_limits(action, pod_spec_path, containers)


def _lowered_limits(action: ActionSpec, pod_spec_path: str, containers: list[dict[str, Any]], *,
                    only_existing: bool = False) -> list[tuple[str, Any]]:
    """`only_existing`: lower limits that are set, never add one (a running pod's resize)."""
    wanted = []
    for index, container in enumerate(containers):
        base = f"{pod_spec_path}/containers/{index}/resources"
        resources = container.get("resources") or {}
        for resource, limit in (("cpu", action.cpu), ("memory", action.memory)):
            if limit is None:
                continue
            current_limit = (resources.get("limits") or {}).get(resource)
            if current_limit is not None and parse_quantity(current_limit) <= parse_quantity(limit):
                continue
            if current_limit is None and only_existing:
                continue
            wanted.append((f"{base}/limits/{resource}", limit))
            request = (resources.get("requests") or {}).get(resource)
            if request is not None and parse_quantity(request) > parse_quantity(limit):
                wanted.append((f"{base}/requests/{resource}", limit))
    return wanted


def uncovered_changes(action: ActionSpec, kind: str, current: dict[str, Any], recorded: list[FieldChange],
                      sequestration: str) -> list[FieldChange]:
    """While a hold holds: the changes `action` would make to the workload as it is now that no recorded
    change covers. What was added since the hold was recorded escapes a re-assertion of the recorded paths
    alone: a container appended to a throttled template, a limit set where none was. Empty for actions that
    change no workload field (isolate; a Job's throttle resizes its pods; a SparkApplication's cap gates its
    executor pods and its throttle resizes them: plan_changes plans nothing for them), and when the action
    no longer plans at all (no container left): nothing is guessed then."""
    try:
        wanted = plan_changes(action, kind, current, sequestration)
    except PlanError:
        return []
    paths = [c.path for c in recorded]
    return [c for c in wanted
            if not any(c.path == p or c.path.startswith(p + "/") or p.startswith(c.path + "/") for p in paths)]


def qos_class(containers: list[dict[str, Any]]) -> str:
    """A pod's QoS class from its containers, by Kubernetes' rule: a request left unset defaults to its
    limit; Guaranteed when every container limits and requests cpu and memory equally, BestEffort when
    none sets any, Burstable otherwise."""
    guaranteed, anything = True, False
    for container in containers:
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        anything = anything or bool(limits) or bool(requests)
        for resource in ("cpu", "memory"):
            limit, request = limits.get(resource), requests.get(resource, limits.get(resource))
            if limit is None or request is None or parse_quantity(limit) != parse_quantity(request):
                guaranteed = False
    if guaranteed and containers:
        return "Guaranteed"
    return "Burstable" if anything else "BestEffort"


def plan_pod_resize(action: ActionSpec, pod: dict[str, Any]) -> tuple[list[FieldChange], str | None]:
    """The in-place resize of a running pod that a throttle makes: its containers' existing limits lowered
    (never raised or added, requests above a new limit lowered with it), as changes under /spec/containers.
    Returns a reason instead when the resize cannot be made in place: the API server refuses a resize that
    changes the pod's QoS class, so such a pod is left alone and reported."""
    containers = (pod.get("spec") or {}).get("containers") or []
    # In place, only limits that exist are lowered: kube-apiserver 1.37 refused a resize adding a limit to a
    # container that had none ("resource limits cannot be removed"), and adding one can change QoS anyway.
    changes, scratch = _changes_to(pod, _lowered_limits(action, "/spec", containers, only_existing=True))
    before_class, after_class = qos_class(containers), qos_class(scratch["spec"]["containers"])
    if before_class != after_class:
        return [], (f"its QoS class would change from {before_class} to {after_class}, which a resize in place "
                    "may not do")
    return changes, None


def _check_executor_cap(cap: int) -> None:
    """A cap on a SparkApplication's executors changes no field of it: the spark-operator resubmits a running
    application whose spec changes (anything but `suspend`), which restarts the job rather than slowing it.
    Its new executor pods are gated instead (actuators/spark_gate.py)."""
    if cap < 1:
        raise PlanError("a SparkApplication cannot be capped below 1 executor (it would wait for ever with its "
                        "driver running): suspend it instead")


def _check_executor_throttle(action: ActionSpec) -> None:
    """A SparkApplication is throttled through its running executor pods, resized in place like a Job's;
    its spec is not changed (the spark-operator would resubmit the application)."""
    if action.memory is not None:
        raise PlanError("throttling a SparkApplication's memory is not supported: the executors' heap is set at "
                        "their start, and a lower limit kills them rather than slowing them; cap executors instead")
    if action.cpu is None:
        raise PlanError("throttling a SparkApplication needs cpu")


def pod_labels(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """The labels of the pods `obj` of `kind` makes, from its pod template: what an isolation selects by."""
    info = kinds.kind_info(kind)
    path = None if info is None else info.pod_labels_path
    if path is None:
        raise PlanError(f"a {kind} has no pod template to select its pods by")
    labels = get_pointer(obj, path)
    if labels is _MISSING or not labels:
        raise PlanError(f"the {kind}'s pod template has no labels to select its pods by")
    return dict(labels)


def apply_changes(obj: dict[str, Any], changes: list[FieldChange]) -> None:
    """Apply changes to a dict in place (what the API server does with the patch)."""
    for change in changes:
        *parents, last = _segments(change.path)
        container = obj
        for segment in parents:
            container = container[int(segment)] if isinstance(container, list) else container[segment]
        if isinstance(container, list):
            container[int(last)] = copy.deepcopy(change.after)
        else:
            container[last] = copy.deepcopy(change.after)


def apply_patch(changes: list[FieldChange]) -> list[dict[str, Any]]:
    """JSON patch that makes the changes, failing (422) if a field moved since it was planned."""
    ops: list[dict[str, Any]] = []
    for change in changes:
        if change.existed:
            ops.append({"op": "test", "path": change.path, "value": change.before})
            ops.append({"op": "replace", "path": change.path, "value": change.after})
        else:
            # Still absent: the API server's `test` takes a missing member as null. Without it, an object a
            # concurrent writer put here (an annotations map) would be replaced, and removed on restore.
            ops.append({"op": "test", "path": change.path, "value": None})
            ops.append({"op": "add", "path": change.path, "value": change.after})
    return ops


def record_annotation(holder_uid: str) -> str:
    return f"{PRIOR_STATE_ANNOTATION_PREFIX}{holder_uid}"


def without_records(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of `obj` without the prior-state records holds keep on it: bookkeeping, not a field an action
    changed, so a recorded change (an annotations map a hold added) compares as it was written."""
    scratch = copy.deepcopy(obj)
    annotations = (scratch.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict):
        for key in [k for k in annotations if k.startswith(PRIOR_STATE_ANNOTATION_PREFIX)]:
            del annotations[key]
    return scratch


def recorded_patch(current: dict[str, Any], pending: list[FieldChange], holder_uid: str,
                   record: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The patch that makes `pending` hold and writes `record` (the hold's prior state, as its status keeps
    it) on the target in the same request: the record lands if and only if the changes do. None when the
    target would have no annotations map to hold it: adding one only for the record could not be undone
    exactly (an empty map stays on some kinds)."""
    after = copy.deepcopy(current)
    apply_changes(after, pending)
    if not isinstance((after.get("metadata") or {}).get("annotations"), dict):
        return None
    return [*apply_patch(pending),
            {"op": "add", "path": f"/metadata/annotations/{escape(record_annotation(holder_uid))}",
             "value": json.dumps(record, separators=(",", ":"), sort_keys=True)}]


def recorded_on(obj: dict[str, Any], holder_uid: str) -> list[dict[str, Any]] | None:
    """The prior-state record hold `holder_uid` wrote on `obj` with its changes, or None."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(record_annotation(holder_uid))
    if not isinstance(raw, str):
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None  # not ours to trust: the hold is then planned again, and its patch's tests decide
    return record if isinstance(record, list) else None


def record_removal(current: dict[str, Any], holder_uid: str) -> list[dict[str, Any]]:
    """The op that takes hold `holder_uid`'s record off `current` on release, if it is there."""
    if record_annotation(holder_uid) not in ((current.get("metadata") or {}).get("annotations") or {}):
        return []
    return [{"op": "remove", "path": f"/metadata/annotations/{escape(record_annotation(holder_uid))}"}]


@dataclass(frozen=True)
class ApplyPlan:
    pending: list[FieldChange]  # still to write
    drifted: list[FieldChange]  # someone else changed the field since it was recorded: left alone


def plan_apply(current: dict[str, Any], changes: list[FieldChange]) -> ApplyPlan:
    """Which recorded changes still need writing. Idempotent: a change already in place is skipped,
    so re-asserting after a crash or a resume writes nothing twice."""
    scratch = without_records(current)
    pending: list[FieldChange] = []
    drifted: list[FieldChange] = []
    for index, change in enumerate(changes):
        value = get_pointer(scratch, change.path)
        if value == _settled(change, changes[index + 1:]):
            continue
        untouched = (value == change.before) if change.existed else value is _MISSING
        if untouched:
            pending.append(change)
            apply_changes(scratch, [change])
        else:
            drifted.append(change)
    return ApplyPlan(pending, drifted)


def _settled(change: FieldChange, later: list[FieldChange]) -> Any:
    """What `change` leaves at its path once the later changes at or inside it are made too (a mark's
    annotations map holds the keys added into it after it was created)."""
    holder = {"value": copy.deepcopy(change.after)}
    for inner in later:
        if inner.path == change.path:
            holder["value"] = copy.deepcopy(inner.after)
        elif inner.path.startswith(change.path + "/"):
            apply_changes(holder, [FieldChange(path="/value" + inner.path[len(change.path):], after=inner.after)])
    return holder["value"]


@dataclass(frozen=True)
class RestorePlan:
    ops: list[dict[str, Any]]
    restored: list[str]
    conflicts: list[str]  # paths someone else changed while held: left as they are


def plan_restore(current: dict[str, Any], changes: list[FieldChange]) -> RestorePlan:
    """Undo `changes` in reverse order, but only where the field still holds what Sequestra set.

    Each step is judged on the object as the earlier steps leave it: undoing a field added inside a
    parent that Sequestra also added brings that parent back to exactly what was recorded for it."""
    scratch = without_records(current)
    ops: list[dict[str, Any]] = []
    restored: list[str] = []
    conflicts: list[str] = []
    for change in reversed(changes):
        value = get_pointer(scratch, change.path)
        if value is _MISSING and not change.existed:
            restored.append(change.path)  # already gone: nothing to undo
            continue
        if value != change.after:
            if change.existed and value == change.before:
                restored.append(change.path)  # already restored (a retry after a crash)
            else:
                conflicts.append(change.path)
            continue
        ops.append({"op": "test", "path": change.path, "value": change.after})
        if change.existed:
            ops.append({"op": "replace", "path": change.path, "value": change.before})
            apply_changes(scratch, [FieldChange(path=change.path, after=change.before)])
        else:
            ops.append({"op": "remove", "path": change.path})
            _remove(scratch, change.path)
        restored.append(change.path)
    return RestorePlan(ops, restored, conflicts)


def _remove(obj: dict[str, Any], path: str) -> None:
    *parents, last = _segments(path)
    container: Any = obj
    for segment in parents:
        container = container[int(segment)] if isinstance(container, list) else container[segment]
    del container[int(last) if isinstance(container, list) else last]


def restored_object(current: dict[str, Any], plan: RestorePlan) -> dict[str, Any]:
    """The object after the restore plan's patch (what the API server will hold)."""
    result = copy.deepcopy(current)
    for op in plan.ops:
        if op["op"] == "replace":
            apply_changes(result, [FieldChange(path=op["path"], after=op["value"])])
        elif op["op"] == "remove":
            _remove(result, op["path"])
    return result


def isolation_policy(
    name: str, namespace: str, selector: dict[str, str], action: ActionSpec, sequestration: str
) -> dict[str, Any]:
    """A NetworkPolicy denying all ingress and egress of the selected pods but DNS and the allow-lists."""
    dns_ports = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    egress: list[dict[str, Any]] = [{"ports": dns_ports}]
    egress += [{"to": [{"ipBlock": {"cidr": cidr}}]} for cidr in action.allow_egress_to]
    ingress = [{"from": [{"ipBlock": {"cidr": cidr}}]} for cidr in action.allow_ingress_from]
    return {
        "apiVersion": kinds.NETWORK_POLICY.api_version,
        "kind": kinds.NETWORK_POLICY.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "sequestra"},
            "annotations": {SEQUESTRATION_ANNOTATION: sequestration},
        },
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress", "Egress"],
                 "ingress": ingress, "egress": egress},
    }
