"""Guardrails checked before any mutation. Pure: the caller gathers the counts, this decides.

Order matters for the message a user sees: the most fundamental refusal (a protected target) is
reported before a transient one (a cap that frees up when another sequestration is released)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sequestra.model.sequestration import PROTECTED_LABEL


@dataclass(frozen=True)
class Limits:
    protected_namespaces: frozenset[str]
    max_active: int = 50
    max_active_per_namespace: int = 10
    max_namespace_share_percent: int = 100
    max_actions_per_hour: int = 60
    circuit_breaker_max_anomalous: int | None = None


@dataclass(frozen=True)
class ClusterState:
    """What is true right now, besides the sequestration being decided."""

    active_total: int = 0
    active_in_namespace: int = 0
    workloads_in_namespace: int = 1
    actions_last_hour: int = 0
    anomalous_workloads: int = 0


@dataclass(frozen=True)
class Refusal:
    reason: str  # CamelCase, for conditions and Events
    message: str


def check(
    namespace: str, target: str, target_labels: Mapping[str, str], limits: Limits, state: ClusterState,
    *, automated: bool,
) -> Refusal | None:
    """None when the action may go ahead, else why not. Caps and the circuit breaker bound automated
    actions; protection applies to every request, a human's included."""
    if namespace in limits.protected_namespaces:
        return Refusal("ProtectedNamespace", f"namespace {namespace} is protected: Sequestra never acts in it")
    if target_labels.get(PROTECTED_LABEL) == "true":
        return Refusal("ProtectedWorkload", f"{target} is labelled {PROTECTED_LABEL}=true")
    if not automated:
        return None
    if limits.circuit_breaker_max_anomalous is not None and (
        state.anomalous_workloads >= limits.circuit_breaker_max_anomalous
    ):
        return Refusal(
            "CircuitBreakerOpen",
            f"{state.anomalous_workloads} workloads look anomalous at once (breaker at "
            f"{limits.circuit_breaker_max_anomalous}): automated actions stop and a human is paged",
        )
    if state.active_total >= limits.max_active:
        return Refusal("MaxActiveReached", f"{state.active_total} sequestrations active (cap {limits.max_active})")
    if state.active_in_namespace >= limits.max_active_per_namespace:
        return Refusal("NamespaceCapReached", f"{state.active_in_namespace} sequestrations active in {namespace} "
                       f"(cap {limits.max_active_per_namespace})")
    # The share cap bounds how much of a namespace goes dark at once; it never blocks the first hold,
    # or a namespace with one workload could never be contained.
    share = 100 * (state.active_in_namespace + 1) / max(1, state.workloads_in_namespace)
    if state.active_in_namespace and share > limits.max_namespace_share_percent:
        return Refusal("NamespaceShareExceeded", f"holding {target} would hold {share:.0f}% of {namespace}'s "
                       f"workloads (cap {limits.max_namespace_share_percent}%)")
    if state.actions_last_hour >= limits.max_actions_per_hour:
        return Refusal("RateLimited", f"{state.actions_last_hour} actions in the last hour "
                       f"(cap {limits.max_actions_per_hour})")
    return None
