"""Guardrails decide before any mutation; protection holds whatever the input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sequestra.model.policy import PolicyGuardrails
from sequestra.policy.decide import breaker_open
from sequestra.policy.guardrails import Caps, ClusterState, Limits, check
from sequestra.settings import Settings

LIMITS = Limits(protected_namespaces=frozenset({"kube-system", "sequestra-system"}),
                caps=Caps(max_active=5, max_active_per_namespace=2, max_namespace_share_percent=50,
                          max_actions_per_hour=10, max_anomalous_workloads=4))


def _reason(namespace: str = "shop", labels: dict | None = None, automated: bool = True, **state: int) -> str | None:
    refusal = check(namespace, "Deployment/web", labels or {}, LIMITS, ClusterState(**state), automated=automated)
    return refusal.reason if refusal else None


def test_a_quiet_cluster_allows_the_action() -> None:
    assert _reason(workloads_in_namespace=10) is None


def test_each_cap_refuses_with_its_own_reason() -> None:
    assert _reason(active_total=5, workloads_in_namespace=10) == "MaxActiveReached"
    assert _reason(active_in_namespace=2, workloads_in_namespace=10) == "NamespaceCapReached"
    assert _reason(active_in_namespace=1, workloads_in_namespace=3) == "NamespaceShareExceeded"
    assert _reason(actions_last_hour=10, workloads_in_namespace=10) == "RateLimited"


def test_the_breaker_opens_above_its_limit() -> None:
    assert not breaker_open(4, 4)
    assert breaker_open(5, 4)


@pytest.mark.parametrize(("field", "policy_value", "operator_value", "effective"), [
    ("max_active", 2, 50, 2), ("max_active", 80, 50, 50),
    ("max_active_per_namespace", 1, 10, 1), ("max_active_per_namespace", 30, 10, 10),
    ("max_namespace_share_percent", 20, 50, 20), ("max_namespace_share_percent", 90, 50, 50),
    ("max_actions_per_hour", 3, 60, 3), ("max_actions_per_hour", 100, 60, 60),
])
def test_the_stricter_of_the_policy_and_the_operator_setting_applies(
    field: str, policy_value: int, operator_value: int, effective: int,
) -> None:
    loose = {"max_active": 100, "max_active_per_namespace": 100, "max_namespace_share_percent": 100,
             "max_actions_per_hour": 1000}
    policy = PolicyGuardrails.model_validate({**loose, field: policy_value})
    operator = Settings(**{field: operator_value})  # type: ignore[arg-type]
    assert getattr(operator.caps().tightened_by(policy), field) == effective


def test_a_policy_that_sets_max_active_per_namespace_to_one_gets_one() -> None:
    """What docs/INSTALL.md shows users writing; before, the operator's default (10) applied."""
    caps = Settings().caps().tightened_by(PolicyGuardrails.model_validate({"maxActivePerNamespace": 1}))
    limits = Limits(protected_namespaces=frozenset(), caps=caps)
    assert check("shop", "Deployment/b", {}, limits, ClusterState(active_in_namespace=1, workloads_in_namespace=9),
                 automated=True).reason == "NamespaceCapReached"  # type: ignore[union-attr]


def test_the_breaker_limit_is_the_policys_under_the_operators_ceiling() -> None:
    policy = PolicyGuardrails.model_validate({"circuitBreaker": {"maxAnomalousWorkloads": 3}})
    assert Settings().caps().tightened_by(policy).max_anomalous_workloads == 3
    assert Settings(circuit_breaker_max_anomalous=2).caps().tightened_by(policy).max_anomalous_workloads == 2


def test_the_share_cap_never_blocks_the_first_hold_in_a_namespace() -> None:
    assert _reason(active_in_namespace=0, workloads_in_namespace=1) is None


def test_caps_bound_automation_but_not_a_humans_manual_quarantine() -> None:
    assert _reason(active_total=99, actions_last_hour=99, automated=False) is None


@given(
    namespace=st.sampled_from(["kube-system", "sequestra-system"]),
    automated=st.booleans(),
    labels=st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=3),
    counts=st.fixed_dictionaries({k: st.integers(0, 1000) for k in (
        "active_total", "active_in_namespace", "workloads_in_namespace", "actions_last_hour")}),
)
def test_a_protected_namespace_is_never_acted_on_whatever_the_input(
    namespace: str, automated: bool, labels: dict, counts: dict
) -> None:
    assert _reason(namespace, labels, automated, **counts) == "ProtectedNamespace"


@given(automated=st.booleans(), namespace=st.sampled_from(["shop", "payments"]))
def test_a_workload_labelled_protected_is_never_acted_on(automated: bool, namespace: str) -> None:
    labels = {"sequestra.dev/protected": "true"}
    assert _reason(namespace, labels, automated, workloads_in_namespace=10) == "ProtectedWorkload"


def test_label_selectors_follow_kubernetes_semantics() -> None:
    from sequestra.model.selectors import matches

    labels = {"app": "web", "tier": "front"}
    assert matches(None, labels) and matches({}, labels)
    assert matches({"matchLabels": {"app": "web"}}, labels)
    assert not matches({"matchLabels": {"app": "api"}}, labels)
    assert matches({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]}, labels)
    assert not matches({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, labels)
    assert matches({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}, labels)
    assert not matches({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, labels)
