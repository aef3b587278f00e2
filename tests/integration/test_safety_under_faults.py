"""The safety promises when calls fail or the world moves under a hold (issue: every safety promise holds under
faults), with the real operator against the real API server. Failures are real: an admission policy of the
API server refuses a write the operator makes; extensions are written by the loop's own code.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kopf.testing import KopfRunner
from kubernetes import client
from kubernetes.client.rest import ApiException

from sequestra.actuators import plans
from sequestra.controller.loop import PolicyLoop
from sequestra.controller.sequestrations import Context
from sequestra.model.policy import SequestrationPolicySpec
from sequestra.model.workload import WorkloadRef
from sequestra.policy.decide import Decision, DecisionKind
from sequestra.sandbox.paths import SandboxPaths
from sequestra.settings import Settings
from tests.integration import workloads
from tests.integration.operator_support import Sequestrations, events_for, running_operator, sequestration
from tests.support import eventually

ADMISSION = "admissionregistration.k8s.io"


@pytest.fixture(scope="module")
def operator(sandbox: SandboxPaths, crds_installed: list[str]) -> Iterator[KopfRunner]:
    with running_operator(sandbox) as runner:
        yield runner


@pytest.fixture()
def seqs(api_client: client.ApiClient, namespace: str) -> Sequestrations:
    return Sequestrations(api_client, namespace)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in body["status"].get("conditions") or [] if c["type"] == kind), {})


# --- extension: one field, one rule for expiry ---------------------------------------------------------
def test_the_loops_extension_keeps_a_ttl_hold_past_its_ttl(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    """An automated hold carries a TTL; a workload still unhealthy at its TTL is extended by the loop (its own
    code path, `_advance` with the EXTEND it decided) and the hold is released at the new time, not the old."""
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    seqs.create(sequestration("brief", "Deployment", "web", {"type": "scale", "replicas": 1}, ttl="6s"))
    old_expiry = seqs.wait_phase("brief", "Active")["status"]["expiresAt"]

    loop = PolicyLoop(Context(Settings(), api_client), namespace, "p")
    policy = SequestrationPolicySpec.model_validate({"ladder": [{"name": "throttle", "actions": []}]})
    extend = Decision(DecisionKind.EXTEND, "not healthy yet", extend_until=time.time() + 25)

    def extended_by_the_loop() -> bool:
        # As the loop does it: over the hold as listed (a write of the handler's since makes it wait an interval).
        loop._advance(policy, seqs.get("brief"), {"rung": 0}, extend, WorkloadRef(namespace, "Deployment", "web"),
                      time.time())
        return bool(seqs.get("brief")["status"].get("extendedUntil"))

    eventually(extended_by_the_loop, timeout_s=5, what="the loop's extension written")

    extended = eventually(lambda: (b := seqs.get("brief"))["status"].get("expiresAt") != old_expiry and b,
                          timeout_s=15, what="status.expiresAt moved to the extension")
    assert extended["status"]["expiresAt"] == extended["status"]["extendedUntil"]
    assert extended["spec"]["ttl"] == "6s" and "expiresAt" not in extended["spec"], "the spec stays the requester's"
    time.sleep(max(0.0, (datetime.fromisoformat(old_expiry.replace("Z", "+00:00")) - datetime.now(UTC))
                   .total_seconds()) + 6)
    assert seqs.get("brief")["status"]["phase"] == "Active", "not released at the TTL it was extended past"
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 1

    released = seqs.wait_phase("brief", "Released", timeout_s=40)
    assert released["status"]["transitions"][-1]["reason"] == "Expired"
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 3


def test_a_hold_whose_expiry_a_human_moves_later_is_released_at_the_new_time(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    first = datetime.now(UTC) + timedelta(seconds=8)
    seqs.create(sequestration("hold", "Deployment", "web", {"type": "scale", "replicas": 0}, expiresAt=_iso(first)))
    seqs.wait_phase("hold", "Active")

    later = datetime.now(UTC) + timedelta(hours=1)
    seqs.patch_spec("hold", {"expiresAt": _iso(later)})
    eventually(lambda: seqs.get("hold")["status"].get("expiresAt") == _iso(later), timeout_s=15,
               what="status.expiresAt following the spec")
    time.sleep(max(0.0, (first - datetime.now(UTC)).total_seconds()) + 7)
    assert seqs.get("hold")["status"]["phase"] == "Active", "released at the old expiry"


# --- a failed addition keeps its record ----------------------------------------------------------------
def _refuse_in(api_client: client.ApiClient, namespace: str, name: str, rule: dict[str, Any], message: str) -> str:
    """A ValidatingAdmissionPolicy (and its binding) of the API server refusing every request `rule` matches
    in `namespace`; its name, for _drop_admission_policy."""
    objects = client.CustomObjectsApi(api_client)
    objects.create_cluster_custom_object(ADMISSION, "v1", "validatingadmissionpolicies", {
        "apiVersion": f"{ADMISSION}/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{"apiVersions": ["*"], **rule}]},
                 "validations": [{"expression": "false", "message": message}]}})
    objects.create_cluster_custom_object(ADMISSION, "v1", "validatingadmissionpolicybindings", {
        "apiVersion": f"{ADMISSION}/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": f"{name}-binding"},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}}})
    return name


def _deny_network_policies(api_client: client.ApiClient, namespace: str) -> str:
    """An admission policy of the API server refusing every NetworkPolicy created in `namespace`."""
    objects = client.CustomObjectsApi(api_client)
    name = _refuse_in(api_client, namespace, f"freeze-netpol-{namespace}",
                      {"apiGroups": ["networking.k8s.io"], "operations": ["CREATE"], "resources": ["networkpolicies"]},
                      "network policies are frozen here (test)")
    probe = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "probe"},
             "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}

    def denied() -> bool:
        try:
            objects.create_namespaced_custom_object("networking.k8s.io", "v1", namespace, "networkpolicies", probe)
        except ApiException as exc:
            return exc.status in (403, 422)
        objects.delete_namespaced_custom_object("networking.k8s.io", "v1", namespace, "networkpolicies", "probe")
        return False

    eventually(denied, timeout_s=30, what="the admission policy enforcing")
    return name


def _drop_admission_policy(api_client: client.ApiClient, name: str) -> None:
    objects = client.CustomObjectsApi(api_client)
    objects.delete_cluster_custom_object(ADMISSION, "v1", "validatingadmissionpolicybindings", f"{name}-binding")
    objects.delete_cluster_custom_object(ADMISSION, "v1", "validatingadmissionpolicies", name)


def test_an_addition_refused_midway_keeps_its_record_and_a_release_restores_what_landed(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    """Held with a label, the hold gains [scale 0, isolate] in one edit; the scale lands, the NetworkPolicy is
    refused by admission. The record keeps the replicas it changed, the refusal is said once in words, the
    addition lands once admission allows it, and the release brings the Deployment back to 3."""
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    seqs.create(sequestration("hold", "Deployment", "web", {"type": "label"}))
    seqs.wait_phase("hold", "Active")
    frozen = _deny_network_policies(api_client, namespace)
    try:
        seqs.patch_spec("hold", {"actions": [{"type": "label"}, {"type": "scale", "replicas": 0}, {"type": "isolate"}]})

        def refused() -> dict[str, Any] | None:
            body = seqs.get("hold")
            return body if _condition(body, "SpecApplied").get("reason") == "ActionRejected" else None

        held = eventually(refused, timeout_s=30, what="the addition refused on the hold")
        message = _condition(held, "SpecApplied")["message"]
        assert "network policies are frozen here" in message, message
        assert "HTTP response headers" not in message and "HTTP response body" not in message, message
        replicas = [c for p in held["status"]["priorState"] for c in p.get("changes") or []
                    if c["path"] == "/spec/replicas"]
        assert replicas and replicas[0]["before"] == 3, f"the replicas' prior value is recorded: {replicas}"
        time.sleep(12)  # a few of the hold's intervals, each retrying the addition
        warnings = [r for t, r, _ in events_for(api_client, namespace, "hold") if t == "Warning"]
        assert warnings.count("ActionRejected") == 1, f"the refusal said once, not every interval: {warnings}"
    finally:
        _drop_admission_policy(api_client, frozen)

    def landed() -> dict[str, Any] | None:
        body = seqs.get("hold")
        return body if _condition(body, "SpecApplied").get("status") == "True" else None

    held = eventually(landed, timeout_s=40, what="the addition landed once admission allows it")
    assert not any(p.get("pending") for p in held["status"]["priorState"])
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 0

    seqs.patch_spec("hold", {"release": True})
    seqs.wait_phase("hold", "Released")
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 3


def test_a_release_while_an_addition_is_refused_restores_the_part_that_landed(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    seqs.create(sequestration("hold", "Deployment", "web", {"type": "label"}))
    seqs.wait_phase("hold", "Active")
    frozen = _deny_network_policies(api_client, namespace)
    try:
        seqs.patch_spec("hold", {"actions": [{"type": "label"}, {"type": "scale", "replicas": 0}, {"type": "isolate"}]})
        eventually(lambda: _condition(seqs.get("hold"), "SpecApplied").get("reason") == "ActionRejected",
                   timeout_s=30, what="the addition refused")
        assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 0, \
            "the scale landed before the NetworkPolicy was refused"
        seqs.patch_spec("hold", {"release": True})
        released = seqs.wait_phase("hold", "Released")
    finally:
        _drop_admission_policy(api_client, frozen)
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 3
    assert "restored" in released["status"]["message"]


# --- guardrails on every step that adds actions ---------------------------------------------------------
def test_a_workload_labelled_protected_while_held_gets_nothing_added(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    seqs.create(sequestration("hold", "Deployment", "web", {"type": "label"}))
    seqs.wait_phase("hold", "Active")
    client.AppsV1Api(api_client).patch_namespaced_deployment(
        "web", namespace, {"metadata": {"labels": {"sequestra.dev/protected": "true"}}})

    seqs.patch_spec("hold", {"actions": [{"type": "label"}, {"type": "scale", "replicas": 0}]})

    def refused() -> dict[str, Any] | None:
        body = seqs.get("hold")
        return body if _condition(body, "SpecApplied").get("status") == "False" else None

    held = eventually(refused, timeout_s=30, what="the addition refused")
    condition = _condition(held, "SpecApplied")
    assert condition["reason"] == "GuardrailRefused" and "ProtectedWorkload" in condition["message"]
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 3
    assert len(held["status"]["priorState"]) == 1, "nothing recorded for the refused addition"
    assert "ActionsAdded" not in {r for _, r, _ in events_for(api_client, namespace, "hold")}


def test_a_second_scale_added_to_a_held_scale_scales_on_and_release_restores_the_original(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    """What an escalation from a cap (`scale 2`) to a quarantine (`scale 0`) asks of a hold."""
    workloads.create(api_client, namespace, workloads.deployment("web", 5))
    seqs.create(sequestration("hold", "Deployment", "web", {"type": "scale", "replicas": 2}, {"type": "label"}))
    seqs.wait_phase("hold", "Active")
    seqs.patch_spec("hold", {"actions": [{"type": "scale", "replicas": 2}, {"type": "label"},
                                         {"type": "scale", "replicas": 0}]})
    eventually(lambda: workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 0,
               timeout_s=30, what="scaled on from 2 to 0")
    assert _condition(seqs.get("hold"), "SpecApplied").get("status") == "True"

    seqs.patch_spec("hold", {"release": True})
    seqs.wait_phase("hold", "Released")
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 5


# --- a hold whose own status cannot be written -----------------------------------------------------------
def _deny_hold_status_writes(api_client: client.ApiClient, namespace: str) -> str:
    """An admission policy refusing every write of a Sequestration's status in `namespace`: the hold can change
    its target but cannot say so on itself."""
    return _refuse_in(api_client, namespace, f"freeze-seq-status-{namespace}",
                      {"apiGroups": ["sequestra.dev"], "operations": ["UPDATE"],
                       "resources": ["sequestrations/status"]},
                      "hold status frozen here (test)")


def test_a_hold_that_cannot_write_its_status_changes_nothing_unrecorded_and_converges_once_it_can(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    seqs.create(sequestration("probe", "Deployment", "web", {"type": "label"}, release=True))
    frozen = _deny_hold_status_writes(api_client, namespace)
    try:
        def enforcing() -> bool:
            try:
                seqs.patch_status("probe", {"message": "probe"})
            except ApiException as exc:
                return exc.status in (403, 422)
            return False

        eventually(enforcing, timeout_s=30, what="the admission policy enforcing")
        seqs.create(sequestration("hold", "Deployment", "web", {"type": "scale", "replicas": 0}))
        time.sleep(10)  # two of the hold's intervals, each failing to write its status
        target = workloads.read(api_client, namespace, "Deployment", "web")
        uid = seqs.get("hold")["metadata"]["uid"]
        if target["spec"]["replicas"] == 0:  # changed: then only with its record beside the change
            assert plans.recorded_on(target, uid), "the target changed without a record of its prior state"
        assert seqs.get("hold").get("status", {}).get("phase") in (None, "Pending")
    finally:
        _drop_admission_policy(api_client, frozen)
    seqs.wait_phase("hold", "Active", timeout_s=60)
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 0
    seqs.patch_spec("hold", {"release": True})
    seqs.wait_phase("hold", "Released")
    restored = workloads.read(api_client, namespace, "Deployment", "web")
    assert restored["spec"]["replicas"] == 3
    assert not plans.recorded_on(restored, uid), "the record left the target with the restore"
