"""Holding a running Spark application at an executor cap by gating its new executor pods (spark_gate)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequestra.actuators import spark_gate

pytestmark = pytest.mark.unit


def _pod(exec_id: int, *, gated: bool = False, phase: str = "Running", deleting: bool = False,
         other_gates: tuple[str, ...] = ()) -> dict[str, Any]:
    gates = [{"name": g} for g in other_gates] + ([{"name": spark_gate.EXECUTOR_GATE}] if gated else [])
    meta: dict[str, Any] = {"name": f"etl-exec-{exec_id}", "labels": {spark_gate.EXECUTOR_ID_LABEL: str(exec_id)}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-07T10:00:00Z"
    return {"metadata": meta, "spec": {"schedulingGates": gates} if gates else {},
            "status": {"phase": "Pending" if gated else phase}}


def test_executors_beyond_the_cap_are_stopped_newest_first() -> None:
    moves = spark_gate.cap_moves([_pod(i) for i in (3, 1, 6, 2, 5, 4)], 4)
    assert moves.stop == ("etl-exec-6", "etl-exec-5")
    assert moves.let_through == ()
    assert moves.running == 6


def test_below_the_cap_the_oldest_waiting_executors_are_let_through() -> None:
    pods = [_pod(1), _pod(2), _pod(9, gated=True), _pod(7, gated=True), _pod(8, gated=True)]
    moves = spark_gate.cap_moves(pods, 4)
    assert moves.stop == ()
    assert moves.let_through == ("etl-exec-7", "etl-exec-8")
    assert moves.waiting == 3


def test_ended_and_terminating_executors_count_for_neither_side() -> None:
    pods = [_pod(1), _pod(2, phase="Failed"), _pod(3, deleting=True), _pod(4, phase="Succeeded"),
            _pod(5, gated=True, deleting=True), _pod(6, gated=True)]
    moves = spark_gate.cap_moves(pods, 2)
    assert moves.running == 1 and moves.waiting == 1
    assert moves.let_through == ("etl-exec-6",)


def test_a_pod_pending_for_the_scheduler_without_the_gate_counts_as_free_to_run() -> None:
    moves = spark_gate.cap_moves([_pod(1), _pod(2, phase="Pending"), _pod(3, phase="Pending")], 2)
    assert moves.stop == ("etl-exec-3",)


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["Running", "Pending", "Failed"]), st.booleans()),
                max_size=30),
       st.integers(min_value=1, max_value=12))
def test_after_the_moves_exactly_the_cap_or_every_executor_there_is_may_run(
    shapes: list[tuple[bool, str, bool]], cap: int,
) -> None:
    pods = [_pod(i, gated=g, phase=p, deleting=d) for i, (g, p, d) in enumerate(shapes, start=1)]
    moves = spark_gate.cap_moves(pods, cap)
    free_after = moves.running - len(moves.stop) + len(moves.let_through)
    assert free_after == min(cap, moves.running + moves.waiting)
    assert not set(moves.stop) & set(moves.let_through)


def test_the_gate_is_lifted_by_index_guarded_by_the_gates_as_read_and_leaves_other_gates() -> None:
    pod = _pod(3, gated=True, other_gates=("example.com/quota",))
    ops = spark_gate.ungate_patch(pod)
    assert ops == [{"op": "test", "path": "/spec/schedulingGates",
                    "value": [{"name": "example.com/quota"}, {"name": spark_gate.EXECUTOR_GATE}]},
                   {"op": "remove", "path": "/spec/schedulingGates/1"}]
    assert spark_gate.ungate_patch(_pod(3)) is None


def test_the_policy_gates_only_new_executor_pods_of_the_held_application_and_never_refuses() -> None:
    policy = spark_gate.gate_policy("sequestra-data-hold", "data", "etl", "hold")
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Ignore"  # a refused executor pod counts as a failure in Spark
    assert spec["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE"]
    condition = spec["matchConditions"][0]["expression"]
    assert "'spark-role'] == 'executor'" in condition and "== 'etl'" in condition
    assert spark_gate.EXECUTOR_GATE in spec["mutations"][0]["applyConfiguration"]["expression"]
    binding = spark_gate.gate_binding("sequestra-data-hold", "data", "hold")
    assert binding["spec"]["policyName"] == "sequestra-data-hold"
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "data"}


def test_an_edited_gate_is_drift_and_an_annotated_one_is_not() -> None:
    desired = spark_gate.gate_policy("p", "data", "etl", "hold")
    assert spark_gate.gate_drift(None, desired)
    annotated = {**desired, "metadata": {**desired["metadata"], "annotations": {"note": "x"}}}
    assert not spark_gate.gate_drift(annotated, desired)
    opened = {**desired, "spec": {**desired["spec"], "mutations": []}}
    assert spark_gate.gate_drift(opened, desired)


def test_the_defaults_the_api_server_fills_in_are_not_an_edit_but_a_narrowed_selector_is() -> None:
    desired = spark_gate.gate_policy("p", "data", "etl", "hold")
    served = copy.deepcopy(desired)
    constraints = served["spec"]["matchConstraints"]
    constraints.update({"matchPolicy": "Equivalent", "namespaceSelector": {}, "objectSelector": {}})
    constraints["resourceRules"][0]["scope"] = "*"
    served["metadata"]["resourceVersion"] = "42"
    assert not spark_gate.gate_drift(served, desired)
    narrowed = copy.deepcopy(served)
    narrowed["spec"]["matchConstraints"]["objectSelector"] = {"matchLabels": {"nothing": "matches"}}
    assert spark_gate.gate_drift(narrowed, desired)
    extra = copy.deepcopy(served)
    extra["spec"]["matchConditions"].append({"name": "never", "expression": "false"})
    assert spark_gate.gate_drift(extra, desired)
