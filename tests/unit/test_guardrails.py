"""Guardrails decide before any mutation; protection holds whatever the input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sequestra.policy.guardrails import ClusterState, Limits, check

LIMITS = Limits(protected_namespaces=frozenset({"kube-system", "sequestra-system"}), max_active=5,
                max_active_per_namespace=2, max_namespace_share_percent=50, max_actions_per_hour=10,
                circuit_breaker_max_anomalous=4)


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
    assert _reason(anomalous_workloads=4, workloads_in_namespace=10) == "CircuitBreakerOpen"


def test_the_share_cap_never_blocks_the_first_hold_in_a_namespace() -> None:
    assert _reason(active_in_namespace=0, workloads_in_namespace=1) is None


def test_caps_bound_automation_but_not_a_humans_manual_quarantine() -> None:
    assert _reason(active_total=99, anomalous_workloads=99, automated=False) is None


@given(
    namespace=st.sampled_from(["kube-system", "sequestra-system"]),
    automated=st.booleans(),
    labels=st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=3),
    counts=st.fixed_dictionaries({k: st.integers(0, 1000) for k in (
        "active_total", "active_in_namespace", "workloads_in_namespace", "actions_last_hour", "anomalous_workloads")}),
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
