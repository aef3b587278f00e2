"""Guardrails checked before any mutation. Pure: the caller gathers the counts, this decides.

Order matters for the message a user sees: the most fundamental refusal (a protected target) is
reported before a transient one (a cap that frees up when another sequestration is released).

The caps that bound automated holds come from two places, and the stricter wins: the operator's settings
(`SEQUESTRA_MAX_*`, a ceiling for the whole cluster) and the guardrails of the policy a hold comes from.
The circuit breaker is the autonomous loop's (policy/decide.py, `breaker_open`): it counts workloads the
scorer finds anomalous, which only the loop sees."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sequestra.model.policy import PolicyGuardrails
from sequestra.model.sequestration import PROTECTED_LABEL


@dataclass(frozen=True)
class Caps:
    """Bounds on the operator's automated holds, counted over all of them."""

    max_active: int = 50
    max_active_per_namespace: int = 10
    max_namespace_share_percent: int = 100
    max_actions_per_hour: int = 60
    max_anomalous_workloads: int = 20  # the loop's circuit breaker opens above this many at once

    def tightened_by(self, policy: PolicyGuardrails | None) -> Caps:
        """The stricter of these (the operator-wide ceiling) and a policy's own guardrails, field by field."""
        if policy is None:
            return self
        theirs = Caps(policy.max_active, policy.max_active_per_namespace, policy.max_namespace_share_percent,
                      policy.max_actions_per_hour, policy.circuit_breaker.max_anomalous_workloads)
        return Caps(**{f.name: min(getattr(self, f.name), getattr(theirs, f.name)) for f in fields(Caps)})

    def as_status(self) -> dict[str, int]:
        """As a policy's status shows them (camelCase, like the spec)."""
        return {"maxActive": self.max_active, "maxActivePerNamespace": self.max_active_per_namespace,
                "maxNamespaceSharePercent": self.max_namespace_share_percent,
                "maxActionsPerHour": self.max_actions_per_hour,
                "maxAnomalousWorkloads": self.max_anomalous_workloads}


@dataclass(frozen=True)
class Limits:
    protected_namespaces: frozenset[str]
    caps: Caps = Caps()


@dataclass(frozen=True)
class ClusterState:
    """What is true right now, besides the sequestration being decided."""

    active_total: int = 0
    active_in_namespace: int = 0
    workloads_in_namespace: int = 1
    actions_last_hour: int = 0


AUTOMATED_REQUESTER = "sequestra"  # spec.requester of the holds the operator itself creates: the ones caps bind
ACTIVE_PHASE = "Active"
HOUR_S = 3600.0


def count_state(sequestrations: Iterable[Mapping[str, Any]], namespace: str, *, workloads_in_namespace: int,
                now: float, excluding_uid: str = "", taking: Mapping[str, str] | None = None) -> ClusterState:
    """The caps' counts over the operator's own holds (automated ones), besides the one being decided:
    - active: Active now, plus those being taken right now (`taking`: uid -> namespace, past their guardrail
      check and not Active yet), so a burst of holds is counted as the caps mean, not as they land;
    - actions in the last hour: every hold that went Active and every escalation or edit that added actions
      (`status.additions`), so escalating does not outrun the rate cap."""
    taking = {uid: ns for uid, ns in (taking or {}).items() if uid != excluding_uid}
    hour_ago = now - HOUR_S
    active_total = active_in_namespace = actions = 0
    for item in sequestrations:
        meta, status = item.get("metadata") or {}, item.get("status") or {}
        uid = meta.get("uid")
        if uid == excluding_uid or (item.get("spec") or {}).get("requester") != AUTOMATED_REQUESTER:
            continue
        if status.get("phase") == ACTIVE_PHASE and uid not in taking:
            active_total += 1
            active_in_namespace += meta.get("namespace") == namespace
        actions += sum(1 for t in status.get("transitions") or []
                       if t.get("phase") == ACTIVE_PHASE and _epoch(t.get("at")) >= hour_ago)
        actions += sum(1 for at in status.get("additions") or [] if _epoch(at) >= hour_ago)
    active_total += len(taking)
    active_in_namespace += sum(1 for ns in taking.values() if ns == namespace)
    return ClusterState(active_total=active_total, active_in_namespace=active_in_namespace,
                        workloads_in_namespace=workloads_in_namespace, actions_last_hour=actions)


def _epoch(value: Any) -> float:
    if not value:
        return 0.0
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Refusal:
    reason: str  # CamelCase, for conditions and Events
    message: str


def protection(namespace: str, labels: Mapping[str, str], protected_namespaces: Iterable[str]) -> str:
    """Why Sequestra may never act on a workload here, or "" when it may: the one rule the loop, the
    diagnosis (so no diagnoser proposes what cannot be done) and the eval all apply."""
    if namespace in protected_namespaces:
        return f"namespace {namespace} is protected"
    if labels.get(PROTECTED_LABEL) == "true":
        return f"labelled {PROTECTED_LABEL}=true"
    return ""


def check(
    namespace: str, target: str, target_labels: Mapping[str, str], limits: Limits, state: ClusterState,
    *, automated: bool,
) -> Refusal | None:
    """None when the action may go ahead, else why not. Caps bound automated
    actions; protection applies to every request, a human's included."""
    if namespace in limits.protected_namespaces:
        return Refusal("ProtectedNamespace", f"namespace {namespace} is protected: Sequestra never acts in it")
    if target_labels.get(PROTECTED_LABEL) == "true":
        return Refusal("ProtectedWorkload", f"{target} is labelled {PROTECTED_LABEL}=true")
    if not automated:
        return None
    caps = limits.caps
    if state.active_total >= caps.max_active:
        return Refusal("MaxActiveReached", f"{state.active_total} sequestrations active (cap {caps.max_active})")
    if state.active_in_namespace >= caps.max_active_per_namespace:
        return Refusal("NamespaceCapReached", f"{state.active_in_namespace} sequestrations active in {namespace} "
                       f"(cap {caps.max_active_per_namespace})")
    # The share cap bounds how much of a namespace goes dark at once; it never blocks the first hold,
    # or a namespace with one workload could never be contained.
    share = 100 * (state.active_in_namespace + 1) / max(1, state.workloads_in_namespace)
    if state.active_in_namespace and share > caps.max_namespace_share_percent:
        return Refusal("NamespaceShareExceeded", f"holding {target} would hold {share:.0f}% of {namespace}'s "
                       f"workloads (cap {caps.max_namespace_share_percent}%)")
    if state.actions_last_hour >= caps.max_actions_per_hour:
        return Refusal("RateLimited", f"{state.actions_last_hour} actions in the last hour "
                       f"(cap {caps.max_actions_per_hour})")
    return None
