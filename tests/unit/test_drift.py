"""Drift while held: what counts as undone, how it is put back, who did it, and that release stays exact."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sequestra.actuators import drift, plans
from sequestra.model.sequestration import ActionSpec, ActionType


def _deployment(replicas: int = 5, cpu: str = "2", labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata = {"name": "web", "namespace": "shop", "labels": labels if labels is not None else {"app": "web"}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
            "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [{"name": "main", "image": "app:1", "resources": {"limits": {"cpu": cpu}}},
                               {"name": "sidecar", "image": "proxy:1"}]}}}}


def _hold(obj: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """The object as held (scale 0, throttle 100m, marked) and the recorded changes."""
    changes = []
    scratch = copy.deepcopy(obj)
    for action in (ActionSpec(type=ActionType.SCALE, replicas=0), ActionSpec(type=ActionType.THROTTLE, cpu="100m"),
                   ActionSpec(type=ActionType.LABEL)):
        planned = plans.plan_changes(action, "Deployment", scratch, "hold-web")
        plans.apply_changes(scratch, planned)
        changes += planned
    return scratch, changes


def _patched(obj: dict[str, Any], plan: drift.ReassertPlan) -> dict[str, Any]:
    result = copy.deepcopy(obj)
    for op in plan.ops:
        if op["op"] == "test" and op["value"] is None:  # the API server takes a missing member as null
            assert not plans.exists(result, op["path"]) or plans.get_pointer(result, op["path"]) is None, op
        elif op["op"] == "test":
            assert plans.get_pointer(result, op["path"]) == op["value"], op
        else:
            plans.apply_changes(result, [plans.FieldChange(path=op["path"], after=op["value"])])
    return result


def test_nothing_to_do_while_everything_holds() -> None:
    held, changes = _hold(_deployment())
    plan = drift.plan_reassert(held, changes)
    assert plan.ops == [] and plan.undone == []


def test_scaled_back_up_is_put_back_with_a_test_of_what_was_found() -> None:
    held, changes = _hold(_deployment())
    held["spec"]["replicas"] = 3
    plan = drift.plan_reassert(held, changes)
    assert plan.undone == [("/spec/replicas", 3, 0)]
    assert plan.ops == [{"op": "test", "path": "/spec/replicas", "value": 3},
                        {"op": "replace", "path": "/spec/replicas", "value": 0}]


def test_a_stripped_label_and_a_raised_limit_are_put_back() -> None:
    held, changes = _hold(_deployment())
    del held["metadata"]["labels"]["sequestra.dev/sequestered"]
    held["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "4"
    plan = drift.plan_reassert(held, changes)
    paths = {path for path, _, _ in plan.undone}
    assert paths == {"/metadata/labels/sequestra.dev~1sequestered",
                     "/spec/template/spec/containers/0/resources/limits/cpu"}
    assert drift.plan_reassert(_patched(held, plan), changes).undone == []


def test_tightening_further_is_not_tampering() -> None:
    held, changes = _hold(_deployment())
    held["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "50m"
    assert drift.plan_reassert(held, changes).undone == []
    assert drift.loosened("/spec/replicas", 0, 1) is False
    assert drift.loosened("/spec/replicas", 2, 1) is True
    assert drift.loosened("/spec/suspend", False, True) is True
    assert drift.loosened("/x/resources/limits/memory", "1Gi", "512Mi") is True


def test_an_annotation_added_beside_ours_is_not_tampering() -> None:
    # The deployment had no annotations: Sequestra's change created the map, and owns only its leaves.
    held, changes = _hold(_deployment())
    held["metadata"]["annotations"]["team"] = "shop"
    assert drift.plan_reassert(held, changes).undone == []
    del held["metadata"]["annotations"]["sequestra.dev/sequestration"]
    plan = drift.plan_reassert(held, changes)
    assert [p for p, _, _ in plan.undone] == ["/metadata/annotations/sequestra.dev~1sequestration"]
    assert _patched(held, plan)["metadata"]["annotations"]["team"] == "shop", "the neighbour is kept"


def test_labels_removed_wholesale_are_put_back_at_the_missing_parent() -> None:
    held, changes = _hold(_deployment(labels={}))
    del held["metadata"]["labels"]
    plan = drift.plan_reassert(held, changes)
    assert _patched(held, plan)["metadata"]["labels"] == {"sequestra.dev/sequestered": "true"}


@given(replicas=st.integers(1, 50), cpu_m=st.integers(200, 8000))
def test_release_after_tampering_and_reassertion_restores_exactly(replicas: int, cpu_m: int) -> None:
    original = _deployment(replicas=5, cpu="2")
    held, changes = _hold(original)
    tampered = copy.deepcopy(held)
    tampered["spec"]["replicas"] = replicas
    tampered["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = f"{cpu_m}m"
    del tampered["metadata"]["labels"]["sequestra.dev/sequestered"]
    reasserted = _patched(tampered, drift.plan_reassert(tampered, changes))
    released = plans.restored_object(reasserted, plans.plan_restore(reasserted, changes))
    assert released == original


def _managed(*entries: tuple[str, dict[str, Any], str | None, str | None]) -> list[dict[str, Any]]:
    return [{"manager": m, "operation": "Update", "fieldsV1": f, **({"subresource": s} if s else {}),
             **({"time": t} if t else {})} for m, f, s, t in entries]


def test_the_owner_of_a_changed_field_comes_from_managed_fields() -> None:
    held, _ = _hold(_deployment())
    held["metadata"]["managedFields"] = _managed(
        ("sequestra", {"f:metadata": {"f:labels": {"f:sequestra.dev/sequestered": {}}}}, None, "2026-01-01T00:00:00Z"),
        ("kubectl", {"f:spec": {"f:replicas": {}}}, "scale", None),
        ("agent-x", {"f:spec": {"f:template": {"f:spec": {"f:containers": {
            'k:{"name":"main"}': {"f:resources": {"f:limits": {"f:cpu": {}}}}}}}}}, None, "2026-01-01T00:01:00Z"),
    )
    assert str(drift.field_owner(held, "/spec/replicas")) == "kubectl (Update via /scale)"
    owner = drift.field_owner(held, "/spec/template/spec/containers/0/resources/limits/cpu")
    assert owner is not None and (owner.manager, owner.time) == ("agent-x", "2026-01-01T00:01:00Z")
    assert drift.field_owner(held, "/spec/template/spec/containers/1/resources/limits/cpu") is None
    assert drift.field_owner(held, "/metadata/labels/sequestra.dev~1sequestered") is None, "ours is not an author"
    assert drift.owner_text(held, "/x", plans._MISSING) == drift.REMOVED_BY_UNKNOWN


def test_an_edited_isolation_policy_is_found_and_put_back() -> None:
    action = ActionSpec(type=ActionType.ISOLATE)
    desired = plans.isolation_policy("sequestra-hold", "shop", {"app": "web"}, action, "hold")
    stored = copy.deepcopy(desired)
    del stored["spec"]["ingress"]  # the API server drops empty lists: not a drift
    stored["metadata"]["resourceVersion"] = "7"
    assert drift.isolation_drift(stored, desired) == []
    stored["spec"]["egress"].append({})  # allow all egress
    del stored["metadata"]["labels"]
    assert drift.isolation_drift(stored, desired) == ["/spec", "/metadata/labels/app.kubernetes.io~1managed-by"]
    ops = drift.isolation_fix(stored, desired)
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    assert {"op": "add", "path": "/metadata/labels", "value": {"app.kubernetes.io/managed-by": "sequestra"}} in ops


def test_a_tampering_describes_what_and_who() -> None:
    t = drift.Tampering(action="scale", target="Deployment/web", path="/spec/replicas", what="changed", found=3,
                        wanted=0, by="kubectl (Update via /scale)")
    assert t.describe() == "Deployment/web/spec/replicas changed to 3 (held at 0) by kubectl (Update via /scale)"
    assert t.as_record()["by"] == "kubectl (Update via /scale)"
