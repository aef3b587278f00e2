"""Planning Spark actions on a SparkApplication: no action but suspend changes its spec (the spark-operator
resubmits a running application whose spec changes), suspending, exact undo."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequestra.actuators import plans
from sequestra.model.sequestration import ActionSpec, ActionType


def _app(executor: dict[str, Any] | None = None, allocation: dict[str, Any] | None = None,
         spark_conf: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "Scala", "mode": "cluster", "sparkVersion": "3.5.5", "mainApplicationFile": "local:///app.jar",
        "driver": {"cores": 1, "memory": "512m"},
        "executor": {"cores": 1, "memory": "1g", **(executor or {})},
    }
    if allocation is not None:
        spec["dynamicAllocation"] = allocation
    if spark_conf is not None:
        spec["sparkConf"] = spark_conf
    return {"apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
            "metadata": {"name": "etl", "namespace": "data"}, "spec": spec}


def _release(obj: dict[str, Any], changes: list[Any]) -> dict[str, Any]:
    return plans.restored_object(obj, plans.plan_restore(obj, changes))


@pytest.mark.parametrize(("executor", "allocation"), [
    ({"instances": 10}, {"enabled": True, "maxExecutors": 50}),
    ({}, {"enabled": True}),
    ({"instances": 6}, None),
    ({"instances": 6}, {"enabled": True, "minExecutors": 8, "initialExecutors": 12}),
], ids=["max-and-instances", "unbounded", "static", "min-above-cap"])
def test_a_cap_changes_no_field_of_the_application(executor: dict[str, Any], allocation: dict[str, Any] | None) -> None:
    cap = ActionSpec(type=ActionType.SCALE, replicas=4)
    assert plans.plan_changes(cap, "SparkApplication", _app(executor, allocation), "s") == []


def test_a_cap_with_executor_settings_in_spark_conf_is_planned_the_same_since_no_field_is_written() -> None:
    app = _app({"instances": 6}, spark_conf={"spark.dynamicAllocation.maxExecutors": "100"})
    assert plans.plan_changes(ActionSpec(type=ActionType.SCALE, replicas=4), "SparkApplication", app, "s") == []


def test_cap_below_one_executor_is_refused_with_the_way_out() -> None:
    with pytest.raises(plans.PlanError, match="suspend it instead"):
        plans.plan_changes(ActionSpec(type=ActionType.SCALE, replicas=0), "SparkApplication", _app(), "s")


def test_suspend_applies_to_scheduled_and_plain_spark_applications() -> None:
    scheduled = {"apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "ScheduledSparkApplication",
                 "metadata": {"name": "nightly"}, "spec": {"schedule": "@daily", "template": _app()["spec"]}}
    suspend = ActionSpec(type=ActionType.SUSPEND)
    changes = plans.plan_changes(suspend, "ScheduledSparkApplication", scheduled, "s")
    assert [(c.path, c.before, c.after, c.existed) for c in changes] == [("/spec/suspend", None, True, False)]
    held = copy.deepcopy(scheduled)
    plans.apply_changes(held, changes)
    assert held["spec"]["suspend"] is True
    assert _release(held, changes) == scheduled
    assert plans.plan_changes(suspend, "SparkApplication", {**_app(), "spec": {**_app()["spec"], "suspend": False}},
                              "s")[0].before is False


def test_scale_does_not_apply_to_a_scheduled_spark_application() -> None:
    with pytest.raises(plans.PlanError, match="scale does not apply to a ScheduledSparkApplication"):
        plans.plan_changes(ActionSpec(type=ActionType.SCALE, replicas=2), "ScheduledSparkApplication", {}, "s")


def test_a_throttle_changes_no_field_of_the_application_its_running_executors_are_resized() -> None:
    app = _app({"cores": 2, "coreLimit": "2"})
    assert plans.plan_changes(ActionSpec(type=ActionType.THROTTLE, cpu="500m"), "SparkApplication", app, "s") == []


def test_throttle_of_executor_memory_is_refused_with_the_reason() -> None:
    with pytest.raises(plans.PlanError, match="heap is set at"):
        plans.plan_changes(ActionSpec(type=ActionType.THROTTLE, memory="512Mi"), "SparkApplication", _app(), "s")


def test_a_cap_held_while_the_owner_switches_dynamic_allocation_on_needs_nothing_new() -> None:
    cap = ActionSpec(type=ActionType.SCALE, replicas=4)
    held = _app({"instances": 10})
    held["spec"]["dynamicAllocation"] = {"enabled": True, "minExecutors": 6}  # the gate holds whatever Spark asks
    assert plans.uncovered_changes(cap, "SparkApplication", held, [], "s") == []


def _apps() -> st.SearchStrategy[dict[str, Any]]:
    counts = st.one_of(st.none(), st.integers(min_value=1, max_value=200))
    allocation = st.one_of(
        st.none(),
        st.fixed_dictionaries({"enabled": st.booleans()},
                              optional={"maxExecutors": counts, "minExecutors": counts, "initialExecutors": counts}),
    )

    def build(instances: int | None, alloc: dict[str, Any] | None, core_limit: str | None) -> dict[str, Any]:
        executor: dict[str, Any] = {}
        if instances is not None:
            executor["instances"] = instances
        if core_limit is not None:
            executor["coreLimit"] = core_limit
        if alloc is not None:
            alloc = {k: v for k, v in alloc.items() if v is not None}
        return _app(executor, alloc)

    return st.builds(build, counts, allocation, st.one_of(st.none(), st.sampled_from(["100m", "1", "4"])))


@given(_apps(), st.integers(min_value=1, max_value=100), st.sampled_from(["scale", "throttle", "label"]))
def test_release_after_any_spark_action_is_the_identity_and_only_a_label_touches_the_spec(
    original: dict[str, Any], cap: int, kind: str,
) -> None:
    action = {"scale": ActionSpec(type=ActionType.SCALE, replicas=cap),
              "throttle": ActionSpec(type=ActionType.THROTTLE, cpu="250m"),
              "label": ActionSpec(type=ActionType.LABEL)}[kind]
    changes = plans.plan_changes(action, "SparkApplication", original, "s")
    held = copy.deepcopy(original)
    plans.apply_changes(held, changes)
    assert held["spec"] == original["spec"]  # a spec change would resubmit the running application
    assert _release(held, changes) == original
