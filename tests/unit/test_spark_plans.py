"""Planning Spark actions: capping a SparkApplication's executors, suspending, throttling, exact undo."""

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


def _cap(obj: dict[str, Any], executors: int) -> dict[str, tuple[Any, Any, bool]]:
    changes = plans.plan_changes(ActionSpec(type=ActionType.SCALE, replicas=executors), "SparkApplication", obj, "s")
    return {c.path: (c.before, c.after, c.existed) for c in changes}


def _release(obj: dict[str, Any], changes: list[Any]) -> dict[str, Any]:
    return plans.restored_object(obj, plans.plan_restore(obj, changes))


def test_cap_lowers_max_executors_and_instances_recording_both_priors() -> None:
    app = _app({"instances": 10}, {"enabled": True, "maxExecutors": 50})
    assert _cap(app, 4) == {"/spec/dynamicAllocation/maxExecutors": (50, 4, True),
                            "/spec/executor/instances": (10, 4, True)}


def test_cap_writes_an_absent_max_executors_since_absent_means_unbounded() -> None:
    assert _cap(_app({}, {"enabled": True}), 4) == {"/spec/dynamicAllocation/maxExecutors": (None, 4, False)}


def test_cap_lowers_min_and_initial_executors_above_it_so_spark_accepts_the_bounds() -> None:
    app = _app({}, {"enabled": True, "minExecutors": 8, "initialExecutors": 12, "maxExecutors": 20})
    assert _cap(app, 4) == {"/spec/dynamicAllocation/maxExecutors": (20, 4, True),
                            "/spec/dynamicAllocation/minExecutors": (8, 4, True),
                            "/spec/dynamicAllocation/initialExecutors": (12, 4, True)}


def test_cap_never_raises_a_count_and_leaves_an_absent_instances_absent() -> None:
    assert _cap(_app({"instances": 2}, {"enabled": True, "maxExecutors": 3, "minExecutors": 1}), 4) == {}
    assert _cap(_app(), 4) == {}  # static allocation, instances defaulted to 1 by spark-operator


def test_cap_ignores_max_executors_when_dynamic_allocation_is_off() -> None:
    app = _app({"instances": 6}, {"enabled": False, "maxExecutors": 50})
    assert _cap(app, 4) == {"/spec/executor/instances": (6, 4, True)}


def test_cap_below_one_executor_is_refused_with_the_way_out() -> None:
    with pytest.raises(plans.PlanError, match="suspend it instead"):
        _cap(_app({"instances": 6}), 0)


def test_cap_is_refused_when_spark_conf_would_override_the_spec_fields() -> None:
    app = _app({"instances": 6}, spark_conf={"spark.dynamicAllocation.maxExecutors": "100"})
    with pytest.raises(plans.PlanError, match=r"spark\.dynamicAllocation\.maxExecutors in spec\.sparkConf"):
        _cap(app, 4)


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


def test_throttle_lowers_the_executor_core_limit_and_a_request_above_it() -> None:
    app = _app({"cores": 2, "coreLimit": "2"})
    changes = plans.plan_changes(ActionSpec(type=ActionType.THROTTLE, cpu="500m"), "SparkApplication", app, "s")
    assert {c.path: (c.before, c.after, c.existed) for c in changes} == {
        "/spec/executor/coreLimit": ("2", "500m", True),
        "/spec/executor/coreRequest": (None, "500m", False),
    }


def test_throttle_never_raises_a_lower_core_limit() -> None:
    app = _app({"coreLimit": "200m", "coreRequest": "100m"})
    assert plans.plan_changes(ActionSpec(type=ActionType.THROTTLE, cpu="1"), "SparkApplication", app, "s") == []


def test_throttle_of_executor_memory_is_refused_with_the_reason() -> None:
    with pytest.raises(plans.PlanError, match="JVM heap"):
        plans.plan_changes(ActionSpec(type=ActionType.THROTTLE, memory="512Mi"), "SparkApplication", _app(), "s")


def test_restore_leaves_a_cap_someone_raised_while_held_and_restores_the_rest() -> None:
    app = _app({"instances": 10}, {"enabled": True})
    changes = plans.plan_changes(ActionSpec(type=ActionType.SCALE, replicas=4), "SparkApplication", app, "s")
    held = copy.deepcopy(app)
    plans.apply_changes(held, changes)
    held["spec"]["executor"]["instances"] = 7  # a human's edit while held
    plan = plans.plan_restore(held, changes)
    assert plan.conflicts == ["/spec/executor/instances"]
    restored = plans.restored_object(held, plan)
    assert "maxExecutors" not in restored["spec"]["dynamicAllocation"]
    assert restored["spec"]["executor"]["instances"] == 7


def _held(app: dict[str, Any], action: ActionSpec) -> tuple[dict[str, Any], list[Any]]:
    changes = plans.plan_changes(action, "SparkApplication", app, "s")
    held = copy.deepcopy(app)
    plans.apply_changes(held, changes)
    return held, changes


def test_dynamic_allocation_switched_on_under_a_cap_is_capped_too_and_released_as_its_owner_left_it() -> None:
    cap = ActionSpec(type=ActionType.SCALE, replicas=4)
    held, recorded = _held(_app({"instances": 10}), cap)
    held["spec"]["dynamicAllocation"] = {"enabled": True, "minExecutors": 6}  # the owner's way around the cap
    fresh = plans.uncovered_changes(cap, "SparkApplication", held, recorded, "s")
    assert {c.path: (c.before, c.after) for c in fresh} == {"/spec/dynamicAllocation/maxExecutors": (None, 4),
                                                            "/spec/dynamicAllocation/minExecutors": (6, 4)}
    plans.apply_changes(held, fresh)
    assert _effective_cap(held) == 4
    restored = _release(held, [*recorded, *fresh])
    assert restored["spec"]["executor"]["instances"] == 10
    assert restored["spec"]["dynamicAllocation"] == {"enabled": True, "minExecutors": 6}


def test_a_cap_undone_on_a_recorded_field_is_left_to_re_assertion_not_planned_twice() -> None:
    cap = ActionSpec(type=ActionType.SCALE, replicas=4)
    held, recorded = _held(_app({"instances": 10}, {"enabled": True, "maxExecutors": 50}), cap)
    held["spec"]["dynamicAllocation"]["maxExecutors"] = 50
    held["spec"]["executor"]["instances"] = 30
    assert plans.uncovered_changes(cap, "SparkApplication", held, recorded, "s") == []


def test_a_cap_moved_into_spark_conf_while_held_is_not_guessed_at() -> None:
    cap = ActionSpec(type=ActionType.SCALE, replicas=4)
    held, recorded = _held(_app({"instances": 10}), cap)
    held["spec"]["sparkConf"] = {"spark.executor.instances": "40"}
    assert plans.uncovered_changes(cap, "SparkApplication", held, recorded, "s") == []


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


def _effective_cap(app: dict[str, Any]) -> int:
    """How many executors the spec allows, as the stand-in and Spark read it."""
    allocation = app["spec"].get("dynamicAllocation") or {}
    instances = app["spec"]["executor"].get("instances", 1)
    if allocation.get("enabled"):
        return int(allocation.get("maxExecutors", 10**9))
    return int(instances)


def _counts(original: dict[str, Any], held: dict[str, Any]) -> list[tuple[int, int]]:
    pairs = [(original["spec"]["executor"].get("instances"), held["spec"]["executor"].get("instances"))]
    for field in ("minExecutors", "initialExecutors", "maxExecutors"):
        pairs.append(((original["spec"].get("dynamicAllocation") or {}).get(field, 10**9),
                      (held["spec"].get("dynamicAllocation") or {}).get(field, 10**9)))
    return [(a, b) for a, b in pairs if a is not None and b is not None]


@given(_apps(), st.integers(min_value=1, max_value=100), st.sampled_from(["scale", "throttle", "label"]))
def test_release_after_any_spark_action_is_the_identity_and_a_cap_holds(
    original: dict[str, Any], cap: int, kind: str,
) -> None:
    action = {"scale": ActionSpec(type=ActionType.SCALE, replicas=cap),
              "throttle": ActionSpec(type=ActionType.THROTTLE, cpu="250m"),
              "label": ActionSpec(type=ActionType.LABEL)}[kind]
    changes = plans.plan_changes(action, "SparkApplication", original, "s")
    held = copy.deepcopy(original)
    plans.apply_changes(held, changes)
    if kind == "scale":
        assert _effective_cap(held) <= cap
        allocation = held["spec"].get("dynamicAllocation") or {}
        if allocation.get("enabled"):
            assert all(allocation.get(f, 0) <= cap for f in ("minExecutors", "initialExecutors", "maxExecutors"))
        assert all(before >= after for before, after in _counts(original, held))  # never raised
    assert _release(held, changes) == original
