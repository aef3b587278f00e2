"""Planning actions as field changes: what each action changes, and that release undoes exactly that."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequestra.actuators import plans
from sequestra.model.sequestration import ActionSpec, ActionType


def _deployment(replicas: int = 3, resources: dict[str, Any] | None = None, labels: dict | None = None,
                annotations: dict | None = None) -> dict:
    container: dict[str, Any] = {"name": "main", "image": "app:1"}
    if resources is not None:
        container["resources"] = resources
    metadata: dict[str, Any] = {"name": "web", "namespace": "shop"}
    if labels is not None:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": {
        "replicas": replicas,
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}},
    }}


def _release(obj: dict, changes: list) -> dict:
    return plans.restored_object(obj, plans.plan_restore(obj, changes))


def test_scale_records_the_replica_count_it_replaces() -> None:
    changes = plans.plan_changes(ActionSpec(type=ActionType.SCALE, replicas=0), "Deployment", _deployment(5), "s")
    assert [(c.path, c.before, c.after) for c in changes] == [("/spec/replicas", 5, 0)]


def test_scale_to_the_current_count_changes_nothing() -> None:
    assert plans.plan_changes(ActionSpec(type=ActionType.SCALE, replicas=3), "Deployment", _deployment(3), "s") == []


def test_throttle_lowers_limits_and_requests_above_them_but_never_raises() -> None:
    obj = _deployment(resources={"limits": {"cpu": "4", "memory": "128Mi"}, "requests": {"cpu": "2"}})
    changes = plans.plan_changes(ActionSpec(type=ActionType.THROTTLE, cpu="500m", memory="1Gi"), "Deployment", obj, "s")
    by_path = {c.path: (c.before, c.after) for c in changes}
    base = "/spec/template/spec/containers/0/resources"
    assert by_path == {f"{base}/limits/cpu": ("4", "500m"), f"{base}/requests/cpu": ("2", "500m")}


def test_throttle_of_a_container_without_resources_adds_them_at_the_highest_missing_parent() -> None:
    changes = plans.plan_changes(ActionSpec(type=ActionType.THROTTLE, cpu="200m"), "Deployment", _deployment(), "s")
    assert len(changes) == 1
    assert changes[0].path == "/spec/template/spec/containers/0/resources"
    assert changes[0].existed is False
    assert changes[0].after == {"limits": {"cpu": "200m"}}


def test_an_action_that_does_not_fit_the_kind_is_refused_with_the_kinds_it_fits() -> None:
    with pytest.raises(plans.PlanError, match="suspend does not apply to a Deployment"):
        plans.plan_changes(ActionSpec(type=ActionType.SUSPEND), "Deployment", _deployment(), "s")


def test_throttling_a_job_changes_nothing_in_its_immutable_template() -> None:
    job = {"kind": "Job", "metadata": {"name": "j"},
           "spec": {"template": {"spec": {"containers": [{"name": "m", "resources": {"limits": {"cpu": "2"}}}]}}}}
    assert plans.plan_changes(ActionSpec(type=ActionType.THROTTLE, cpu="100m"), "Job", job, "s") == []


def _pod(*containers: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "p", "uid": "u"}, "spec": {"containers": list(containers)}}


def test_a_running_pod_is_resized_with_lower_limits_and_requests_lowered_below_them() -> None:
    pod = _pod({"name": "m", "resources": {"limits": {"cpu": "2", "memory": "1Gi"},
                                           "requests": {"cpu": "1", "memory": "512Mi"}}},
               {"name": "side", "resources": {"limits": {"cpu": "100m"}}}, {"name": "bare"})
    changes, refusal = plans.plan_pod_resize(ActionSpec(type=ActionType.THROTTLE, cpu="500m"), pod)
    assert refusal is None
    resized = copy.deepcopy(pod)
    plans.apply_changes(resized, changes)
    assert resized["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "500m", "memory": "1Gi"},
                                                             "requests": {"cpu": "500m", "memory": "512Mi"}}
    assert resized["spec"]["containers"][1] == pod["spec"]["containers"][1], "already below: never raised"
    assert resized["spec"]["containers"][2] == {"name": "bare"}, "no limit: none added in place"
    restored = plans.restored_object(resized, plans.plan_restore(resized, changes))
    assert restored == pod


def test_a_resize_that_would_change_the_qos_class_is_refused_with_the_reason() -> None:
    # Lowering only the cpu of a Guaranteed pod keeps it Guaranteed (requests follow the limit) ...
    guaranteed = _pod({"name": "m", "resources": {"limits": {"cpu": "2", "memory": "1Gi"},
                                                  "requests": {"cpu": "2", "memory": "1Gi"}}})
    assert plans.qos_class(guaranteed["spec"]["containers"]) == "Guaranteed"
    changes, refusal = plans.plan_pod_resize(ActionSpec(type=ActionType.THROTTLE, cpu="1"), guaranteed)
    assert refusal is None and {c.path.rsplit("/", 2)[-2] for c in changes} == {"limits", "requests"}
    # ... but lowering the cpu limit of a Burstable pod onto its request would make it Guaranteed, which
    # the API server refuses in place: the pod is left alone, with the reason.
    almost = _pod({"name": "m", "resources": {"limits": {"cpu": "2", "memory": "1Gi"},
                                              "requests": {"cpu": "1", "memory": "1Gi"}}})
    assert plans.qos_class(almost["spec"]["containers"]) == "Burstable"
    changes, refusal = plans.plan_pod_resize(ActionSpec(type=ActionType.THROTTLE, cpu="1"), almost)
    assert changes == [] and refusal is not None and "Burstable to Guaranteed" in refusal
    # A container without a limit gets none in place (a resize may not add one).
    best_effort = _pod({"name": "m"})
    assert plans.qos_class(best_effort["spec"]["containers"]) == "BestEffort"
    assert plans.plan_pod_resize(ActionSpec(type=ActionType.THROTTLE, cpu="1"), best_effort) == ([], None)
    # A request left unset counts as its limit (Kubernetes defaults it so).
    assert plans.qos_class([{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]) == "Guaranteed"


def test_label_marks_the_workload_and_names_the_sequestration() -> None:
    changes = plans.plan_changes(ActionSpec(type=ActionType.LABEL), "Deployment", _deployment(labels={"a": "b"}), "q1")
    marked = copy.deepcopy(_deployment(labels={"a": "b"}))
    plans.apply_changes(marked, changes)
    assert marked["metadata"]["labels"] == {"a": "b", "sequestra.dev/sequestered": "true"}
    assert marked["metadata"]["annotations"] == {"sequestra.dev/sequestration": "q1",
                                                 "kustomize.toolkit.fluxcd.io/reconcile": "disabled"}


def test_restore_leaves_a_field_someone_else_changed_and_reports_it() -> None:
    obj = _deployment(5)
    changes = plans.plan_changes(ActionSpec(type=ActionType.SCALE, replicas=0), "Deployment", obj, "s")
    plans.apply_changes(obj, changes)
    obj["spec"]["replicas"] = 2  # a human scaled it while it was held
    plan = plans.plan_restore(obj, changes)
    assert plan.ops == []
    assert plan.conflicts == ["/spec/replicas"]


def test_restore_twice_is_a_no_op_the_second_time() -> None:
    obj = _deployment(5)
    changes = plans.plan_changes(ActionSpec(type=ActionType.SCALE, replicas=0), "Deployment", obj, "s")
    plans.apply_changes(obj, changes)
    once = _release(obj, changes)
    assert plans.plan_restore(once, changes).ops == []
    assert plans.plan_restore(once, changes).conflicts == []


_quantities = st.sampled_from(["50m", "100m", "250m", "1", "2", "4", None])
_memories = st.sampled_from(["64Mi", "256Mi", "1Gi", "2G", None])


@st.composite
def _workloads(draw: st.DrawFn) -> dict:
    limits = {k: v for k, v in (("cpu", draw(_quantities)), ("memory", draw(_memories))) if v}
    requests = {k: v for k, v in (("cpu", draw(_quantities)),) if v}
    resources = draw(st.sampled_from([None, {}, {"limits": limits}, {"limits": limits, "requests": requests}]))
    labels = draw(st.sampled_from([None, {}, {"team": "a"}]))
    return _deployment(draw(st.integers(0, 20)), resources, labels)


@st.composite
def _actions(draw: st.DrawFn) -> ActionSpec:
    kind = draw(st.sampled_from([ActionType.SCALE, ActionType.THROTTLE, ActionType.LABEL]))
    if kind is ActionType.SCALE:
        return ActionSpec(type=kind, replicas=draw(st.integers(0, 5)))
    if kind is ActionType.THROTTLE:
        return ActionSpec(type=kind, cpu=draw(st.sampled_from(["100m", "1"])), memory=draw(_memories))
    return ActionSpec(type=kind)


@given(_workloads(), st.lists(_actions(), min_size=1, max_size=3))
def test_release_after_apply_is_the_identity(original: dict, actions: list[ActionSpec]) -> None:
    obj = copy.deepcopy(original)
    recorded = []
    for action in actions:
        changes = plans.plan_changes(action, "Deployment", obj, "seq")
        plans.apply_changes(obj, changes)
        recorded.append(changes)
    for changes in reversed(recorded):
        obj = _release(obj, changes)
    assert obj == original


HOLD_UID = "8d2f0c1e-0000-4000-8000-000000000001"


def _api_server_patch(obj: dict, ops: list[dict[str, Any]]) -> dict:
    """A JSON patch applied as kube-apiserver applies it: all or nothing, and a `test` against null passes on
    a missing member (the jsonpatch library would refuse it)."""
    patched = obj
    for op in ops:
        if op["op"] == "test" and op["value"] is None and not plans.exists(patched, op["path"]):
            continue
        patched = jsonpatch.apply_patch(patched, [op])
    return patched


def _first_plan(obj: dict, actions: list[ActionSpec]) -> list[plans.FieldChange]:
    scratch, changes = copy.deepcopy(obj), []
    for action in actions:
        planned = plans.plan_changes(action, "Deployment", scratch, "hold-web")
        plans.apply_changes(scratch, planned)
        changes += planned
    return changes


@given(_workloads(), st.sampled_from([None, {}, {"team": "a"}]), st.lists(_actions(), max_size=2))
def test_a_first_plan_goes_with_its_record_in_one_patch_and_release_takes_both_back(
        original: dict, annotations: dict | None, actions: list[ActionSpec]) -> None:
    if annotations is not None:
        original["metadata"]["annotations"] = annotations
    changes = _first_plan(original, [*actions, ActionSpec(type=ActionType.LABEL)])
    record = [{"action": "scale", "changes": [c.model_dump(mode="json", by_alias=True) for c in changes]}]

    patch = plans.recorded_patch(original, changes, HOLD_UID, record)
    assert patch is not None, "the mark always leaves an annotations map to carry the record"
    held = _api_server_patch(original, patch)

    assert plans.recorded_on(held, HOLD_UID) == record
    assert plans.plan_apply(held, changes).pending == [], "applied again after a crash, it writes nothing"
    assert plans.plan_apply(held, changes).drifted == [], "its own record is not someone else's change"
    restore = plans.plan_restore(held, changes)
    assert restore.conflicts == []
    assert _api_server_patch(held, [*plans.record_removal(held, HOLD_UID), *restore.ops]) == original


def test_a_patch_planned_from_a_stale_copy_writes_nothing_not_even_the_record() -> None:
    stale = _deployment(5)
    changes = _first_plan(stale, [ActionSpec(type=ActionType.SCALE, replicas=0), ActionSpec(type=ActionType.LABEL)])
    patch = plans.recorded_patch(stale, changes, HOLD_UID, [{"action": "scale"}])
    assert patch is not None
    # Since the copy was read, the owner scaled to 7; someone else annotated the Deployment.
    for current in (_deployment(7), _deployment(5, annotations={"owner": "team-a"})):
        with pytest.raises(jsonpatch.JsonPatchTestFailed):
            _api_server_patch(current, patch)


def test_a_target_with_no_annotations_map_to_carry_the_record_gets_no_one_patch() -> None:
    obj = _deployment(5)
    changes = _first_plan(obj, [ActionSpec(type=ActionType.SCALE, replicas=0)])
    assert plans.recorded_patch(obj, changes, HOLD_UID, []) is None
    annotated = _deployment(5, annotations={})
    assert plans.recorded_patch(annotated, changes, HOLD_UID, []) is not None


def test_only_a_hold_s_own_well_formed_record_is_read_back() -> None:
    obj = _deployment(annotations={plans.record_annotation(HOLD_UID): "{not json", "other": "1"})
    assert plans.recorded_on(obj, HOLD_UID) is None
    obj["metadata"]["annotations"][plans.record_annotation(HOLD_UID)] = '[{"action": "scale"}]'
    assert plans.recorded_on(obj, HOLD_UID) == [{"action": "scale"}]
    assert plans.recorded_on(obj, "another-uid") is None
