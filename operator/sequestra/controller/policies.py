"""SequestrationPolicy handlers: validate the policy and keep its status current (what it covers,
what it holds), so `kubectl get seqpol` tells a platform team where Sequestra may act."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import structlog
from kubernetes import client
from pydantic import ValidationError

from sequestra.controller.sequestrations import Context
from sequestra.model import selectors
from sequestra.model.conditions import set_condition
from sequestra.model.policy import POLICY_PLURAL, SequestrationPolicySpec
from sequestra.model.sequestration import GROUP, PLURAL, VERSION, Phase

log = structlog.get_logger("sequestra.policy")


def covered_namespaces(core: client.CoreV1Api, policy_namespace: str, spec: SequestrationPolicySpec,
                        operator_namespace: str) -> list[str]:
    """A namespaced policy covers its own namespace; the default in the operator's namespace covers
    the namespaces it names or selects."""
    if policy_namespace != operator_namespace:
        return [policy_namespace]
    names = set(spec.selector.namespaces)
    if spec.selector.namespace_selector:
        names |= {str(ns.metadata.name) for ns in core.list_namespace().items
                  if selectors.matches(spec.selector.namespace_selector, ns.metadata.labels or {})}
    return sorted(names)


def _observe(ctx: Context, objects: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str, name: str,
             spec: SequestrationPolicySpec) -> tuple[int, int]:
    namespaces = covered_namespaces(core, namespace, spec, ctx.settings.operator_namespace)
    covered = sum(
        1 for ns in namespaces for item in ctx.actuator.list_workloads(ns, spec.covered_kinds())
        if selectors.matches(spec.selector.workload_selector, item["metadata"].get("labels") or {})
    )
    held: Any = objects.list_cluster_custom_object(GROUP, VERSION, PLURAL)
    active = sum(1 for s in held["items"] if (s.get("spec") or {}).get("policyRef") == name
                 and s["metadata"]["namespace"] in namespaces and (s.get("status") or {}).get("phase") == Phase.ACTIVE)
    return covered, active


OBSERVER_MANAGER = "sequestra-policy-observer"  # owns the Ready condition; the loop owns its own (loop.py)


def _write(objects: client.CustomObjectsApi, namespace: str, name: str, status: dict[str, Any]) -> None:
    conditions = status.pop("conditions", None)
    if status:
        objects.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, POLICY_PLURAL, name,
                                                      {"status": status}, _content_type="application/merge-patch+json")
    if conditions is not None:
        apply_conditions(objects, namespace, name, OBSERVER_MANAGER, conditions, owned=("Ready",))



def apply_conditions(objects: client.CustomObjectsApi, namespace: str, name: str, manager: str,
                     conditions: list[dict[str, Any]], *, owned: tuple[str, ...]) -> None:
    """Write only the `owned` condition types of a policy's status, by server-side apply. Two writers share
    the list (this handler and the policy's loop); the CRD lists conditions as a map keyed by type, so each
    writer's apply leaves the other's conditions alone instead of overwriting them from a stale copy."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SequestrationPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "status": {"conditions": [c for c in conditions if c.get("type") in owned]}}
    objects.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, POLICY_PLURAL, name, body,
                                                  field_manager=manager, force=True,
                                                  _content_type="application/apply-patch+yaml")


@kopf.on.resume(GROUP, VERSION, POLICY_PLURAL)
@kopf.on.create(GROUP, VERSION, POLICY_PLURAL)
@kopf.on.update(GROUP, VERSION, POLICY_PLURAL, field="spec")
@kopf.timer(GROUP, VERSION, POLICY_PLURAL, interval=15.0, initial_delay=15.0)
async def observe_policy(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    ctx = memo.context
    objects = client.CustomObjectsApi(ctx.api_client)
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    generation = body["metadata"].get("generation")
    conditions = list((body.get("status") or {}).get("conditions") or [])
    try:
        spec = SequestrationPolicySpec.model_validate(dict(body["spec"]))
    except ValidationError as exc:
        error = exc.errors()[0]
        message = f"invalid policy: {error['msg']} at {'.'.join(map(str, error['loc']))}"
        await asyncio.to_thread(_write, objects, namespace, name, {
            "observedGeneration": generation,
            "conditions": set_condition(conditions, "Ready", False, "InvalidSpec", message, generation)})
        kopf.warn(body, reason="InvalidSpec", message=message)
        return
    covered, active = await asyncio.to_thread(_observe, ctx, objects, client.CoreV1Api(ctx.api_client), namespace,
                                              name, spec)
    await asyncio.to_thread(_write, objects, namespace, name, {
        "observedGeneration": generation, "coveredWorkloads": covered, "activeSequestrations": active,
        "conditions": set_condition(conditions, "Ready", True, "Observed",
                                    f"covers {covered} workload(s) in mode {spec.mode}", generation)})
