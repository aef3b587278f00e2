"""Judging whether the admission guard enforces, from its policies and bindings as the API server lists them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sequestra.signals.guard import GUARD_POLICIES, GuardState, assess

GUARD_DIR = Path(__file__).resolve().parents[2] / "crds" / "guard"
PARAMS = ("sequestra-system", "sequestra-guard")


def _shipped() -> list[dict[str, Any]]:
    return [doc for path in sorted(GUARD_DIR.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def _as_listed() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The shipped manifests as the API server lists them once it has compiled them cleanly."""
    docs = copy.deepcopy(_shipped())
    policies = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    for policy in policies:
        policy["metadata"]["generation"] = 1
        policy["status"] = {"observedGeneration": 1, "typeChecking": {}}
    bindings = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    return policies, bindings


def test_the_shipped_guard_is_the_one_the_status_reader_expects() -> None:
    docs = _shipped()
    policies = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
    bound = sorted(d["spec"]["policyName"] for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding")
    assert policies == sorted(GUARD_POLICIES)
    assert bound == sorted(GUARD_POLICIES), "every policy has exactly one binding"
    params = [d for d in docs if d["kind"] == "ConfigMap"]
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in params] == [PARAMS]
    assert "system:serviceaccount:sequestra-system:sequestra" in params[0]["data"]["operators"].split(",")


def test_every_shipped_binding_denies_and_can_be_turned_off_per_namespace() -> None:
    for binding in (d for d in _shipped() if d["kind"] == "ValidatingAdmissionPolicyBinding"):
        assert binding["spec"]["validationActions"] == ["Deny"]
        assert {"key": "sequestra.dev/guard", "operator": "NotIn", "values": ["off"]} in \
            binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]


def test_shipped_guard_with_its_parameters_is_enforcing() -> None:
    policies, bindings = _as_listed()
    status = assess(policies, bindings, {PARAMS: True})
    assert status.state is GuardState.ENFORCING, status.problems
    assert status.installed
    assert all(check.bindings == (check.name,) for check in status.policies)


def test_nothing_installed_is_absent() -> None:
    status = assess([], [], {})
    assert status.state is GuardState.ABSENT
    assert not status.installed
    assert "not installed" in status.summary()


def test_a_missing_policy_or_binding_is_named() -> None:
    policies, bindings = _as_listed()
    status = assess([p for p in policies if p["metadata"]["name"] != "sequestra-guard-scale"],
                    [b for b in bindings if b["spec"]["policyName"] != "sequestra-guard-workloads"], {PARAMS: True})
    assert status.state is GuardState.PARTIAL
    assert "policy sequestra-guard-scale is missing" in status.problems
    assert "policy sequestra-guard-workloads has no binding" in status.problems


def test_a_binding_that_only_warns_does_not_enforce() -> None:
    policies, bindings = _as_listed()
    bindings[0]["spec"]["validationActions"] = ["Warn", "Audit"]
    status = assess(policies, bindings, {PARAMS: True})
    assert status.state is GuardState.PARTIAL
    assert any("does not deny (validationActions: Warn, Audit)" in p for p in status.problems)


def test_missing_parameters_refuse_everything_the_binding_matches() -> None:
    policies, bindings = _as_listed()
    status = assess(policies, bindings, {PARAMS: False})
    assert status.state is GuardState.PARTIAL
    assert any("sequestra-system/sequestra-guard are missing, so it refuses every request" in p
               for p in status.problems)


def test_parameters_that_could_not_be_read_are_unknown_not_absent() -> None:
    policies, bindings = _as_listed()
    status = assess(policies, bindings, {PARAMS: None})
    assert status.state is GuardState.UNKNOWN


@pytest.mark.parametrize(("status", "expected"), [
    ({"observedGeneration": 1, "typeChecking": {"expressionWarnings": [
        {"fieldRef": "spec.validations[1].expression",
         "warning": "apps/v1, Kind=Deployment: ERROR: undefined field"}]}},
     "type error in spec.validations[1].expression: apps/v1, Kind=Deployment: ERROR: undefined field"),
    ({"observedGeneration": 0}, "not compiled yet"),
])
def test_a_policy_the_api_server_has_not_compiled_cleanly_is_reported(status: dict[str, Any], expected: str) -> None:
    policies, bindings = _as_listed()
    policies[0]["status"] = status
    result = assess(policies, bindings, {PARAMS: True})
    assert result.state is GuardState.PARTIAL
    assert any(expected in p for p in result.problems), result.problems


def test_status_for_a_report_is_plain_data() -> None:
    policies, bindings = _as_listed()
    report = assess(policies, bindings, {PARAMS: True}).as_status()
    assert report["state"] == "Enforcing"
    assert {p["name"] for p in report["policies"]} == set(GUARD_POLICIES)
