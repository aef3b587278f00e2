"""The table of kinds is what the planner does: an action applies to a kind exactly when planning it succeeds."""

from __future__ import annotations

from typing import Any

import pytest

from sequestra.actuators import kubernetes, plans
from sequestra.model import kinds
from sequestra.model.sequestration import ActionSpec, ActionType, WorkloadKind

pytestmark = pytest.mark.unit

# One action of each type, with the parameters its type needs.
ACTIONS = {
    ActionType.SCALE: ActionSpec(type=ActionType.SCALE, replicas=1),
    ActionType.SUSPEND: ActionSpec(type=ActionType.SUSPEND),
    ActionType.THROTTLE: ActionSpec(type=ActionType.THROTTLE, cpu="500m"),
    ActionType.ISOLATE: ActionSpec(type=ActionType.ISOLATE),
    ActionType.LABEL: ActionSpec(type=ActionType.LABEL),
    ActionType.QUOTA: ActionSpec(type=ActionType.QUOTA, producer_byte_rate=1024),
    ActionType.DENY_WRITE: ActionSpec(type=ActionType.DENY_WRITE, topics=("orders",)),
}

_POD_TEMPLATE = {"metadata": {"labels": {"app": "web"}},
                 "spec": {"containers": [{"name": "main", "image": "app:1", "resources": {"limits": {"cpu": "2"}}}]}}
_SPARK_SPEC = {"type": "Scala", "mode": "cluster", "sparkVersion": "3.5.5", "mainApplicationFile": "local:///app.jar",
               "suspend": False, "driver": {"cores": 1, "memory": "512m"},
               "executor": {"cores": 2, "coreRequest": "1", "coreLimit": "2", "instances": 3, "memory": "1g"}}


def _body(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind,
            "metadata": {"name": "w", "namespace": "shop", "uid": "u", "labels": {"app": "web"}, "annotations": {}},
            "spec": spec}


# Written as a user would, not from the table, each with the fields its kind has (replicas, suspend): a wrong
# template path, or an action listed for a kind that has no field for it, cannot pass unnoticed.
BODIES: dict[str, dict[str, Any]] = {
    "Deployment": _body("apps/v1", "Deployment", {"replicas": 3, "template": _POD_TEMPLATE}),
    "StatefulSet": _body("apps/v1", "StatefulSet", {"replicas": 3, "template": _POD_TEMPLATE}),
    "Job": _body("batch/v1", "Job", {"suspend": False, "template": _POD_TEMPLATE}),
    "CronJob": _body("batch/v1", "CronJob", {"schedule": "@hourly", "suspend": False,
                                             "jobTemplate": {"spec": {"template": _POD_TEMPLATE}}}),
    "SparkApplication": _body("sparkoperator.k8s.io/v1beta2", "SparkApplication", _SPARK_SPEC),
    "ScheduledSparkApplication": _body("sparkoperator.k8s.io/v1beta2", "ScheduledSparkApplication",
                                       {"schedule": "@daily", "suspend": False, "template": _SPARK_SPEC}),
    "Pod": _body("v1", "Pod", _POD_TEMPLATE["spec"]),
    "ReplicaSet": _body("apps/v1", "ReplicaSet", {"replicas": 3, "template": _POD_TEMPLATE}),
    "NetworkPolicy": _body("networking.k8s.io/v1", "NetworkPolicy", {"podSelector": {}}),
    "DaemonSet": _body("apps/v1", "DaemonSet", {"template": _POD_TEMPLATE}),  # one the table does not know
}


def _plans(action: ActionSpec, kind: str) -> bool:
    """Whether the planner takes `action` on a minimal `kind`: what the actuator plans before it records."""
    try:
        plans.plan_changes(action, kind, BODIES[kind], "hold")
        if action.type is ActionType.ISOLATE:
            plans.pod_labels(kind, BODIES[kind])  # KubernetesActuator.plan refuses an isolate without them
    except plans.PlanError:
        return False
    return True


@pytest.mark.parametrize("kind", list(BODIES))
@pytest.mark.parametrize("action", list(ActionType))
def test_an_action_applies_to_a_kind_exactly_when_the_planner_takes_it(action: ActionType, kind: str) -> None:
    assert kinds.applicable(action, kind) is _plans(ACTIONS[action], kind)


@pytest.mark.parametrize("kind", list(BODIES))
@pytest.mark.parametrize("action", list(ActionType))
def test_the_planner_refuses_with_the_tables_reason(action: ActionType, kind: str) -> None:
    reason = kinds.not_applicable_reason(action, kind)
    if reason is None:
        return
    with pytest.raises(plans.PlanError) as refused:
        plans.plan_changes(ACTIONS[action], kind, BODIES[kind], "hold")
    assert str(refused.value) == reason
    assert reason.startswith(f"{action} does not apply to a {kind}: it applies to ")
    assert all(k in reason for k in kinds.kinds_for(action))


@pytest.mark.parametrize("action", [ActionType.SCALE, ActionType.SUSPEND, ActionType.THROTTLE])
def test_an_action_listed_for_a_kind_changes_fields_that_kind_has(action: ActionType) -> None:
    """The planner would write a scale to any kind the table listed it for: this is what stops the table from
    listing one whose objects have no such field (it would add a field the API server drops or refuses)."""
    for kind in kinds.kinds_for(action):
        info = kinds.BY_KIND[kind]
        changes = plans.plan_changes(ACTIONS[action], kind, BODIES[kind], "hold")
        if action is ActionType.THROTTLE and info.template_immutable:
            assert changes == [], kind  # its running pods are resized instead (plans.plan_pod_resize)
            continue
        if kind == kinds.SPARK_APPLICATION.kind and action is not ActionType.SUSPEND:
            # Its executors are gated or resized (actuators/spark_gate.py): a spec change resubmits the run.
            assert changes == [], kind
            continue
        assert changes, kind
        assert all(c.existed for c in changes), (kind, [c.path for c in changes if not c.existed])


def test_the_reason_names_the_action_the_kind_and_the_kinds_it_applies_to() -> None:
    assert kinds.not_applicable_reason(ActionType.SCALE, "CronJob") == \
        "scale does not apply to a CronJob: it applies to Deployment, StatefulSet, SparkApplication"
    assert kinds.not_applicable_reason(ActionType.ISOLATE, "SparkApplication") == \
        "isolate does not apply to a SparkApplication: it applies to Deployment, StatefulSet, Job, CronJob"
    assert kinds.not_applicable_reason(ActionType.SCALE, "Deployment") is None
    assert kinds.not_applicable_reason(ActionType.QUOTA, "ScheduledSparkApplication") is None


def test_the_template_paths_find_the_pod_spec_users_write() -> None:
    for info in kinds.KINDS:
        found = kinds.pod_spec(info.kind, BODIES[info.kind])
        if info.pod_template is None:
            assert found is None, info.kind
        else:
            assert found == _POD_TEMPLATE["spec"], info.kind
            assert plans.get_pointer(BODIES[info.kind], str(info.pod_labels_path)) == {"app": "web"}
    assert kinds.pod_spec("DaemonSet", BODIES["DaemonSet"]) is None


def test_what_selects_or_changes_pods_needs_a_pod_template() -> None:
    for info in kinds.KINDS:
        if ActionType.ISOLATE in info.actions or info.template_immutable:
            assert info.pod_template is not None, info.kind


def test_a_sequestration_targets_exactly_the_kinds_the_crd_names() -> None:
    assert set(kinds.TARGET_KINDS) == {str(k) for k in WorkloadKind}
    assert set(kinds.HELD_KINDS) == set(kinds.TARGET_KINDS) - {"Pod"}


def test_every_resource_the_actuator_addresses_comes_from_the_table() -> None:
    for kind, resource in kubernetes.RESOURCES.items():
        info = kinds.kind_info(kind)
        assert info is not None and resource == info.resource, kind
    assert set(kubernetes.RESOURCES) == {info.kind for info in kinds.KINDS if info.group}
    assert set(kubernetes.OPTIONAL_KINDS) | set(kubernetes.OWNER_CHAIN_STOPS) | set(kubernetes.WORKLOAD_KINDS) \
        <= set(kubernetes.RESOURCES)
    # What the controller lists by default is unchanged: the held kinds built on a pod template.
    assert kubernetes.WORKLOAD_KINDS == ("Deployment", "StatefulSet", "Job", "CronJob")


def test_api_versions_are_those_of_the_objects() -> None:
    for kind, body in BODIES.items():
        info = kinds.kind_info(kind)
        if info is not None:
            assert info.api_version == body["apiVersion"], kind
