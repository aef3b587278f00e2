"""Is the admission guard (crds/guard/) in place and enforcing? Read at operator start-up and reported.

The guard is a set of ValidatingAdmissionPolicies and their bindings: each policy must exist, be compiled
without type errors, and be bound with the Deny action to parameters that exist. Anything less is reported
by name, as containment that the held workload may be able to undo. An API server that cannot be asked
(no permission, unreachable) gives an Unknown status, never "absent".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

GUARD_POLICIES = (
    "sequestra-guard-workloads",
    "sequestra-guard-scale",
    "sequestra-guard-networkpolicies",
    "sequestra-guard-sequestrations",
)


class GuardState(StrEnum):
    ENFORCING = "Enforcing"  # every policy present, compiled and bound with Deny to existing parameters
    PARTIAL = "Partial"  # some of it is there: see the problems
    ABSENT = "Absent"  # none of it (not installed, or turned off by deleting it)
    UNKNOWN = "Unknown"  # the API server could not be asked


@dataclass(frozen=True)
class PolicyCheck:
    name: str
    present: bool
    bindings: tuple[str, ...] = ()  # the bindings that enforce it (validationActions include Deny)
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class GuardStatus:
    state: GuardState
    policies: tuple[PolicyCheck, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def installed(self) -> bool:
        return self.state is GuardState.ENFORCING

    def summary(self) -> str:
        if self.state is GuardState.ENFORCING:
            return f"admission guard enforcing ({len(self.policies)} policies)"
        if self.state is GuardState.ABSENT:
            return "admission guard not installed: a held workload's owner can undo its containment"
        return f"admission guard {self.state.lower()}: " + "; ".join(self.problems)

    def as_status(self) -> dict[str, Any]:
        """For a status field or a log line: camelCase, plain values."""
        return {"state": str(self.state), "message": self.summary(),
                "policies": [{"name": p.name, "present": p.present, "bindings": list(p.bindings),
                              "problems": list(p.problems)} for p in self.policies]}


_UNREADABLE = "could not read its parameters"
ParamKey = tuple[str, str]  # (namespace, name) of a parameter object a binding names


def assess(policies: Sequence[Mapping[str, Any]], bindings: Sequence[Mapping[str, Any]],
           params_found: Mapping[ParamKey, bool | None], expected: Sequence[str] = GUARD_POLICIES) -> GuardStatus:
    """Judge the guard from the policies and bindings as listed (JSON form) and whether each parameter
    object a binding names exists (None: it could not be read). Pure."""
    by_name = {p["metadata"]["name"]: p for p in policies}
    checks = []
    for name in expected:
        policy = by_name.get(name)
        if policy is None:
            checks.append(PolicyCheck(name, present=False, problems=(f"policy {name} is missing",)))
            continue
        problems = _policy_problems(policy)
        enforcing = []
        bound = [b for b in bindings if (b.get("spec") or {}).get("policyName") == name]
        for binding in bound:
            binding_name = binding["metadata"]["name"]
            spec = binding.get("spec") or {}
            if "Deny" not in (spec.get("validationActions") or []):
                actions = ", ".join(spec.get("validationActions") or []) or "none"
                problems.append(f"binding {binding_name} does not deny (validationActions: {actions})")
                continue
            param_problem = _param_problem(binding_name, spec.get("paramRef"), params_found)
            if param_problem:
                problems.append(param_problem)
                continue
            enforcing.append(binding_name)
        if not bound:
            problems.append(f"policy {name} has no binding")
        checks.append(PolicyCheck(name, present=True, bindings=tuple(enforcing), problems=tuple(problems)))
    all_problems = tuple(problem for check in checks for problem in check.problems)
    unreadable = tuple(p for p in all_problems if _UNREADABLE in p)
    if not all_problems:
        state = GuardState.ENFORCING
    elif not any(c.present for c in checks) and not any((b.get("spec") or {}).get("policyName") in expected
                                                         for b in bindings):
        state = GuardState.ABSENT
    elif all_problems == unreadable:
        state = GuardState.UNKNOWN  # all there, but whether its parameters exist could not be read
    else:
        state = GuardState.PARTIAL
    return GuardStatus(state, tuple(checks), all_problems)


def _policy_problems(policy: Mapping[str, Any]) -> list[str]:
    name = policy["metadata"]["name"]
    status = policy.get("status") or {}
    problems = []
    if status.get("observedGeneration") != policy["metadata"].get("generation"):
        problems.append(f"policy {name} is not compiled yet (generation {policy['metadata'].get('generation')}, "
                        f"observed {status.get('observedGeneration')})")
    for warning in (status.get("typeChecking") or {}).get("expressionWarnings") or []:
        first_line = str(warning.get("warning", "")).strip().splitlines()[0] if warning.get("warning") else ""
        problems.append(f"policy {name} has a type error in {warning.get('fieldRef')}: {first_line}")
    for condition in status.get("conditions") or []:
        if condition.get("status") == "False":
            problems.append(f"policy {name}: {condition.get('type')} is False: {condition.get('message', '')}")
    return problems


def _param_problem(binding: str, param_ref: Mapping[str, Any] | None,
                   params_found: Mapping[ParamKey, bool | None]) -> str | None:
    if not param_ref or not param_ref.get("name"):
        return None  # no parameters, or a selector (an empty match is a decision of the binding)
    key = (str(param_ref.get("namespace") or ""), str(param_ref["name"]))
    found = params_found.get(key)
    where = f"{key[0]}/{key[1]}" if key[0] else key[1]
    if found is None:
        return f"binding {binding}: {_UNREADABLE} {where}"
    if found:
        return None
    if param_ref.get("parameterNotFoundAction") == "Allow":
        return f"binding {binding}: its parameters {where} are missing, so it lets every request through"
    return f"binding {binding}: its parameters {where} are missing, so it refuses every request it matches"


def guard_installed(api_client: client.ApiClient, expected: Sequence[str] = GUARD_POLICIES) -> GuardStatus:
    """Read the guard's policies, bindings and ConfigMap parameters from the API server and assess them."""
    admission = client.AdmissionregistrationV1Api(api_client)
    try:
        policies = api_client.sanitize_for_serialization(admission.list_validating_admission_policy().items)
        bindings = api_client.sanitize_for_serialization(
            admission.list_validating_admission_policy_binding().items)
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        return GuardStatus(GuardState.UNKNOWN, problems=(f"could not list admission policies: {_reason(exc)}",))
    kinds = {p["metadata"]["name"]: (p.get("spec") or {}).get("paramKind") or {} for p in policies}
    core = client.CoreV1Api(api_client)
    params_found: dict[ParamKey, bool | None] = {}
    for binding in bindings:
        spec = binding.get("spec") or {}
        ref = spec.get("paramRef") or {}
        if spec.get("policyName") not in expected or not ref.get("name"):
            continue
        key = (str(ref.get("namespace") or ""), str(ref["name"]))
        if kinds.get(spec["policyName"], {}).get("kind") != "ConfigMap" or key in params_found:
            continue
        try:
            core.read_namespaced_config_map(key[1], key[0])
            params_found[key] = True
        except ApiException as exc:
            params_found[key] = False if exc.status == 404 else None
        except urllib3.exceptions.HTTPError:
            params_found[key] = None
    return assess(policies, bindings, params_found, expected)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return str(exc)
