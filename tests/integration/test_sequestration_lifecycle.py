"""A Sequestration from creation to exact release, with the real operator against the real API server."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from sequestra.actuators import plans
from sequestra.actuators.kubernetes import KubernetesActuator
from sequestra.controller.finalizers import RESTORE_FINALIZER
from sequestra.model.sequestration import PriorState
from sequestra.sandbox.paths import SandboxPaths
from tests.integration import workloads
from tests.integration.conftest import drop_namespace
from tests.integration.operator_support import (
    PROTECTED_TEST_NAMESPACE,
    Sequestrations,
    events_for,
    policy_status,
    running_operator,
    sequestration,
)
from tests.support import eventually

# Fields the API server or controllers move on their own; everything else must come back exactly.
VOLATILE_METADATA = {"resourceVersion", "generation", "managedFields", "uid", "creationTimestamp"}
VOLATILE_ANNOTATIONS = {"deployment.kubernetes.io/revision"}


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(obj)
    result.pop("status", None)
    metadata = result["metadata"]
    for key in VOLATILE_METADATA:
        metadata.pop(key, None)
    annotations = {k: v for k, v in metadata.get("annotations", {}).items() if k not in VOLATILE_ANNOTATIONS}
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    return result


@pytest.fixture(scope="module")
def operator(sandbox: SandboxPaths, crds_installed: list[str]) -> Iterator[KopfRunner]:
    with running_operator(sandbox) as runner:
        yield runner


@pytest.fixture()
def seqs(api_client: client.ApiClient, namespace: str) -> Sequestrations:
    return Sequestrations(api_client, namespace)


@pytest.mark.parametrize(("kind", "manifest", "action"), [
    ("Deployment", workloads.deployment("web", 3), {"type": "scale", "replicas": 0}),
    ("Deployment", workloads.deployment("web", 2, limits={"cpu": "2", "memory": "1Gi"}, requests={"cpu": "1"}),
     {"type": "throttle", "cpu": "200m", "memory": "256Mi"}),
    ("Deployment", workloads.deployment("web", 1), {"type": "label"}),
    ("CronJob", workloads.cronjob("nightly"), {"type": "suspend"}),
    ("StatefulSet", workloads.statefulset("db", 3), {"type": "scale", "replicas": 0}),
    ("Job", workloads.job("backfill"), {"type": "suspend"}),
], ids=["scale", "throttle", "label", "suspend-cronjob", "scale-statefulset", "suspend-job"])
def test_action_applies_and_release_restores_the_target_exactly(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
    kind: str, manifest: dict[str, Any], action: dict[str, Any],
) -> None:
    name = manifest["metadata"]["name"]
    workloads.create(api_client, namespace, manifest)
    before = eventually(lambda: workloads.read(api_client, namespace, kind, name), what="the workload")

    seqs.create(sequestration("hold", kind, name, action))
    active = seqs.wait_phase("hold", "Active")

    held = workloads.read(api_client, namespace, kind, name)
    assert _comparable(held) != _comparable(before), "the action changed the target"
    assert active["status"]["priorState"][0]["changes"], "what changed is recorded"
    on_target = plans.recorded_on(held, active["metadata"]["uid"]) or []
    assert [PriorState.model_validate(p) for p in on_target] == \
        [PriorState.model_validate(p) for p in active["status"]["priorState"]], \
        "the record went to the target with the changes, in the same patch"
    assert active["status"]["targetRef"] == f"{kind}/{name}"

    seqs.patch_spec("hold", {"release": True})
    released = seqs.wait_phase("hold", "Released")

    assert _comparable(workloads.read(api_client, namespace, kind, name)) == _comparable(before)
    assert [t["phase"] for t in released["status"]["transitions"]] == ["Active", "Releasing", "Released"]
    reasons = {reason for _, reason, _ in events_for(api_client, namespace, "hold")}
    assert {"Applied", "ReleaseRequested"} <= reasons
    assert {"Sequestered", "Released"} <= {reason for _, reason, _ in events_for(api_client, namespace, name)}


def test_isolate_creates_a_network_policy_for_the_pods_and_release_deletes_it(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web", 1))
    networking = client.NetworkingV1Api(api_client)
    seqs.create(sequestration("cut-off", "Deployment", "web",
                              {"type": "isolate", "allowEgressTo": ["10.20.0.0/16"]}))
    seqs.wait_phase("cut-off", "Active")

    policy = networking.read_namespaced_network_policy("sequestra-cut-off", namespace)
    assert policy.spec.pod_selector.match_labels == {"app": "web"}
    assert sorted(policy.spec.policy_types) == ["Egress", "Ingress"]
    assert policy.spec.ingress is None or policy.spec.ingress == []
    egress_cidrs = [peer.ip_block.cidr for rule in policy.spec.egress for peer in (rule.to or [])]
    assert egress_cidrs == ["10.20.0.0/16"]
    assert {p.port for rule in policy.spec.egress for p in (rule.ports or [])} == {53}

    seqs.patch_spec("cut-off", {"release": True})
    seqs.wait_phase("cut-off", "Released")
    assert networking.list_namespaced_network_policy(namespace).items == []


def test_a_pod_target_is_resolved_to_the_deployment_that_owns_it(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web", 2))
    core = client.CoreV1Api(api_client)
    pod = eventually(lambda: core.list_namespaced_pod(namespace, label_selector="app=web").items,
                     what="a pod of web")[0].metadata.name
    seqs.create(sequestration("by-pod", "Pod", pod, {"type": "scale", "replicas": 0}))
    active = seqs.wait_phase("by-pod", "Active")
    assert active["status"]["targetRef"] == "Deployment/web"
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 0


def _pod_resources(core: client.CoreV1Api, namespace: str, app: str) -> dict[str, dict[str, Any]]:
    """Running pods of `app` by name: each container's spec resources, as the API server returns them."""
    pods = [p for p in core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
            if p.status.phase == "Running" and p.status.container_statuses
            and all(s.resources is not None for s in p.status.container_statuses)]
    return {p.metadata.name: {c.name: api_dict(c.resources) for c in p.spec.containers} for p in pods}


def api_dict(model: Any) -> dict[str, Any]:
    return dict(client.ApiClient().sanitize_for_serialization(model) or {})


def test_a_running_job_is_throttled_by_resizing_its_pods_in_place_and_release_restores_them(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    core = client.CoreV1Api(api_client)
    workloads.create(api_client, namespace, workloads.running_job(
        "crunch", 2, limits={"cpu": "2", "memory": "1Gi"}, requests={"cpu": "1", "memory": "512Mi"}))
    before_pods = eventually(lambda: (lambda found: found if len(found) == 2 else None)(
        _pod_resources(core, namespace, "crunch")), what="two running pods of the Job reporting their resources")
    before_job = workloads.read(api_client, namespace, "Job", "crunch")

    seqs.create(sequestration("slow-down", "Job", "crunch", {"type": "throttle", "cpu": "500m"}))
    active = seqs.wait_phase("slow-down", "Active")

    recorded = active["status"]["priorState"][0]["pods"]
    assert sorted(p["pod"] for p in recorded) == sorted(before_pods), "every running pod's resize is recorded"
    held_pods = _pod_resources(core, namespace, "crunch")
    for name, containers in held_pods.items():
        assert containers["main"] == {"limits": {"cpu": "500m", "memory": "1Gi"},
                                      "requests": {"cpu": "500m", "memory": "512Mi"}}, name
        assert containers["sidecar"] == before_pods[name]["sidecar"], "a container without limits is left alone"
    held_job = workloads.read(api_client, namespace, "Job", "crunch")
    assert held_job["spec"]["template"] == before_job["spec"]["template"], "the immutable template is untouched"

    seqs.patch_spec("slow-down", {"release": True})
    seqs.wait_phase("slow-down", "Released")
    assert _pod_resources(core, namespace, "crunch") == before_pods, "the pods are back exactly as they were"
    assert _comparable(workloads.read(api_client, namespace, "Job", "crunch")) == _comparable(before_job)


def test_a_change_made_by_someone_else_while_held_is_not_clobbered_on_release(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web", 4))
    seqs.create(sequestration("hold", "Deployment", "web", {"type": "scale", "replicas": 0}, {"type": "label"}))
    seqs.wait_phase("hold", "Active")
    client.AppsV1Api(api_client).patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 2}})

    seqs.patch_spec("hold", {"release": True})
    released = seqs.wait_phase("hold", "Released")

    deployment = workloads.read(api_client, namespace, "Deployment", "web")
    assert deployment["spec"]["replicas"] == 2, "the human's change stands"
    assert "sequestra.dev/sequestered" not in deployment["metadata"].get("labels", {}), "our own mark is undone"
    conflict = next(c for c in released["status"]["conditions"] if c["type"] == "RestoreConflict")
    assert "/spec/replicas" in conflict["message"]


def test_a_plan_from_a_watch_cache_behind_the_target_is_made_again_before_anything_is_applied(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new hold plans from the API server's watch cache. Here the cache serves a copy from before the
    owner scaled to 5: the hold must still record 5 as the prior state, hold it at 0, and give 5 back."""
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    lagging_copy = workloads.read(api_client, namespace, "Deployment", "web")
    client.AppsV1Api(api_client).patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 5}})
    read = KubernetesActuator.get

    def lagging_cache(self: KubernetesActuator, kind: str, ns: str, name: str, *, cached: bool = False) -> Any:
        if cached and (kind, ns, name) == ("Deployment", namespace, "web"):
            return copy.deepcopy(lagging_copy)
        return read(self, kind, ns, name, cached=cached)

    monkeypatch.setattr(KubernetesActuator, "get", lagging_cache)
    seqs.create(sequestration("hold", "Deployment", "web", {"type": "scale", "replicas": 0}))
    held = seqs.wait_phase("hold", "Active")

    assert held["status"]["priorState"][0]["changes"][0]["before"] == 5, "recorded from the target as it is"
    assert not [c for c in held["status"].get("conditions", []) if c["type"] == "Drifted"]
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 0
    seqs.patch_spec("hold", {"release": True})
    seqs.wait_phase("hold", "Released")
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 5


def test_deleting_the_sequestration_restores_the_target_first(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    seqs.create(sequestration("hold", "Deployment", "web", {"type": "scale", "replicas": 0}))
    active = seqs.wait_phase("hold", "Active")
    assert RESTORE_FINALIZER in active["metadata"]["finalizers"]

    seqs.delete("hold")

    eventually(lambda: seqs.gone("hold"), what="the Sequestration deleted after its finalizer ran")
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 3


def test_ttl_expiry_releases_the_workload(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    seqs.create(sequestration("brief", "Deployment", "web", {"type": "scale", "replicas": 1}, ttl="3s"))
    active = seqs.wait_phase("brief", "Active")
    assert active["status"]["expiresAt"]

    released = seqs.wait_phase("brief", "Released", timeout_s=30)
    assert released["status"]["transitions"][-1]["reason"] == "Expired"
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 3


def test_an_ended_hold_keeps_no_finalizer_that_would_outlive_the_operator(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    seqs.create(sequestration("hold", "Deployment", "web", {"type": "scale", "replicas": 0}))
    assert RESTORE_FINALIZER in seqs.wait_phase("hold", "Active")["metadata"]["finalizers"]

    seqs.patch_spec("hold", {"release": True})
    seqs.wait_phase("hold", "Released")
    # Restored: nothing is left to hold a deletion for, so deleting it needs no operator.
    eventually(lambda: not seqs.get("hold")["metadata"].get("finalizers"), what="the released hold's finalizer gone")


def test_dry_run_records_what_it_would_do_and_changes_nothing(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    before = workloads.read(api_client, namespace, "Deployment", "web")
    seqs.create(sequestration("rehearsal", "Deployment", "web", {"type": "scale", "replicas": 0}, mode="dry-run"))

    def planned() -> dict[str, Any] | None:
        body = seqs.get("rehearsal")
        return body if body.get("status", {}).get("plannedActions") else None

    body = eventually(planned, what="the planned actions recorded")
    assert body["status"]["phase"] == "Pending"
    assert "/spec/replicas 3 -> 0" in body["status"]["message"]
    assert "priorState" not in body["status"]
    assert _comparable(workloads.read(api_client, namespace, "Deployment", "web")) == _comparable(before)
    eventually(lambda: "DryRun" in {r for _, r, _ in events_for(api_client, namespace, "web")},
               what="a DryRun Event on the Deployment")


def test_approval_mode_waits_for_a_human_then_applies(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    seqs.create(sequestration("ask-first", "Deployment", "web", {"type": "scale", "replicas": 0}, mode="approval"))
    waiting = seqs.wait_phase("ask-first", "AwaitingApproval")
    assert "sequestra.dev/approved=true" in waiting["status"]["message"]
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 3
    eventually(lambda: "AwaitingApproval" in {r for _, r, _ in events_for(api_client, namespace, "web")},
               what="an AwaitingApproval Event on the Deployment")

    seqs.patch_spec("ask-first", {"approved": True})
    seqs.wait_phase("ask-first", "Active")
    assert workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"] == 0


def test_a_workload_labelled_protected_is_refused_with_a_reason_and_an_event(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    workloads.create(api_client, namespace,
                     workloads.deployment("payments", 3, labels={"sequestra.dev/protected": "true"}))
    seqs.create(sequestration("nope", "Deployment", "payments", {"type": "scale", "replicas": 0}))
    failed = seqs.wait_phase("nope", "Failed")

    ready = next(c for c in failed["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ProtectedWorkload")
    assert workloads.read(api_client, namespace, "Deployment", "payments")["spec"]["replicas"] == 3
    assert ("Warning", "ProtectedWorkload") in {(t, r) for t, r, _ in events_for(api_client, namespace, "nope")}


def test_a_protected_namespace_is_refused(operator: KopfRunner, api_client: client.ApiClient) -> None:
    core = client.CoreV1Api(api_client)
    eventually(lambda: PROTECTED_TEST_NAMESPACE not in {n.metadata.name for n in core.list_namespace().items},
               timeout_s=60, what="the namespace of an earlier run gone")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=PROTECTED_TEST_NAMESPACE)))
    eventually(lambda: core.list_namespaced_service_account(PROTECTED_TEST_NAMESPACE).items, what="namespace ready")
    seqs = Sequestrations(api_client, PROTECTED_TEST_NAMESPACE)
    try:
        workloads.create(api_client, PROTECTED_TEST_NAMESPACE, workloads.deployment("web", 2))
        seqs.create(sequestration("web", "Deployment", "web", {"type": "scale", "replicas": 0}))
        failed = seqs.wait_phase("web", "Failed")
        assert "ProtectedNamespace" in {c["reason"] for c in failed["status"]["conditions"]}
        assert workloads.read(api_client, PROTECTED_TEST_NAMESPACE, "Deployment", "web")["spec"]["replicas"] == 2
    finally:
        drop_namespace(api_client, PROTECTED_TEST_NAMESPACE)


def test_an_action_that_does_not_fit_the_target_fails_with_a_reason(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web", 3))
    seqs.create(sequestration("odd", "Deployment", "web", {"type": "suspend"}))
    failed = seqs.wait_phase("odd", "Failed")
    assert "suspend does not apply to a Deployment" in failed["status"]["message"]


@pytest.mark.parametrize("explicit_label", [False, True], ids=["mark-implied", "mark-explicit"])
def test_an_added_action_that_does_not_apply_is_refused_on_the_object_and_the_hold_keeps_what_it_applied(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations, explicit_label: bool,
) -> None:
    """A user adds `scale` to a hold that suspends a CronJob: the edit is answered on the object (a condition
    naming the action and the kind, a Warning Event, observedGeneration caught up), the hold stays Active with
    exactly what it applied, and a release still restores the CronJob exactly."""
    workloads.create(api_client, namespace, workloads.cronjob("nightly"))
    before = eventually(lambda: workloads.read(api_client, namespace, "CronJob", "nightly"), what="the CronJob")
    actions = [{"type": "suspend"}, *([{"type": "label"}] if explicit_label else [])]
    seqs.create(sequestration("hold", "CronJob", "nightly", *actions))
    active = seqs.wait_phase("hold", "Active")
    record = active["status"]["priorState"]

    seqs.patch_spec("hold", {"actions": [*actions, {"type": "scale", "replicas": 0}]})

    def answered() -> dict[str, Any] | None:
        body = seqs.get("hold")
        conditions = {c["type"]: c for c in body["status"].get("conditions") or []}
        caught_up = body["status"].get("observedGeneration") == body["metadata"]["generation"]
        return body if caught_up and "SpecApplied" in conditions else None

    held = eventually(answered, timeout_s=30, what="the edit answered on the hold")
    condition = next(c for c in held["status"]["conditions"] if c["type"] == "SpecApplied")
    assert (condition["status"], condition["reason"]) == ("False", "ActionNotApplicable")
    assert "scale" in condition["message"] and "CronJob" in condition["message"]
    assert condition["observedGeneration"] == held["metadata"]["generation"]
    assert held["status"]["phase"] == "Active", "the hold keeps what it applied"
    assert held["status"]["priorState"] == record, "the record is unchanged"
    assert RESTORE_FINALIZER in held["metadata"]["finalizers"]
    assert workloads.read(api_client, namespace, "CronJob", "nightly")["spec"]["suspend"] is True
    assert ("Warning", "ActionNotApplicable") in {(t, r) for t, r, _ in events_for(api_client, namespace, "hold")}

    seqs.patch_spec("hold", {"release": True})
    seqs.wait_phase("hold", "Released")
    assert _comparable(workloads.read(api_client, namespace, "CronJob", "nightly")) == _comparable(before)


def test_a_missing_target_fails_with_a_reason(operator: KopfRunner, seqs: Sequestrations) -> None:
    seqs.create(sequestration("ghost", "Deployment", "does-not-exist", {"type": "scale", "replicas": 0}))
    failed = seqs.wait_phase("ghost", "Failed")
    assert "not found" in failed["status"]["message"]


def _policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "sequestra.dev/v1alpha1", "kind": "SequestrationPolicy", "metadata": {"name": name},
            "spec": {"ladder": [{"name": "observe"}, {"name": "quarantine",
                                                     "actions": [{"type": "scale", "replicas": 0}]}], **spec}}


def test_a_policy_reports_what_it_covers_and_a_bad_one_says_why(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str,
) -> None:
    objects = client.CustomObjectsApi(api_client)
    workloads.create(api_client, namespace, workloads.deployment("web", 1, labels={"sequestra.dev/managed": "yes"}))
    workloads.create(api_client, namespace, workloads.deployment("db", 1))
    selector = {"workloadSelector": {"matchLabels": {"sequestra.dev/managed": "yes"}}}
    objects.create_namespaced_custom_object("sequestra.dev", "v1alpha1", namespace, "sequestrationpolicies",
                                            _policy("shop", selector=selector))
    bad = _policy("twice")
    bad["spec"]["ladder"].append({"name": "observe"})
    objects.create_namespaced_custom_object("sequestra.dev", "v1alpha1", namespace, "sequestrationpolicies", bad)

    def status(name: str) -> dict[str, Any]:
        return policy_status(api_client, namespace, name)

    def ready(name: str) -> dict[str, Any] | None:
        return next((c for c in status(name).get("conditions") or [] if c["type"] == "Ready"), None)

    eventually(lambda: ready("shop") and "coveredWorkloads" in status("shop"), what="policy status")
    good = status("shop")
    assert good["coveredWorkloads"] == 1
    assert good["activeSequestrations"] == 0
    condition = ready("shop") or {}
    assert condition["reason"] == "Observed"
    assert "mode dry-run" in condition["message"], "a policy is dry-run unless told otherwise"
    refused = eventually(lambda: ready("twice"), what="the invalid policy's condition")
    assert (refused["status"], refused["reason"]) == ("False", "InvalidSpec")
    assert "repeated: observe" in refused["message"]

    empty_ladder = _policy("empty")
    empty_ladder["spec"]["ladder"] = []
    with pytest.raises(client.ApiException) as rejected:
        objects.create_namespaced_custom_object("sequestra.dev", "v1alpha1", namespace, "sequestrationpolicies",
                                                empty_ladder)
    assert rejected.value.status == 422


def test_the_policy_observer_and_the_loop_each_keep_their_own_conditions(
    crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    """Two writers share a policy's conditions; each applies only its own types, so a write from a copy that
    predates the other's condition leaves that condition alone."""
    from sequestra.controller.loop import LOOP_MANAGER
    from sequestra.controller.policies import OBSERVER_MANAGER, apply_conditions
    from sequestra.model.conditions import set_condition
    from sequestra.model.policy import POLICY_PLURAL

    objects = client.CustomObjectsApi(api_client)
    objects.create_namespaced_custom_object("sequestra.dev", "v1alpha1", namespace, POLICY_PLURAL, _policy("p"))
    apply_conditions(objects, namespace, "p", OBSERVER_MANAGER,
                     set_condition([], "Ready", True, "Observed", "covers 0 workload(s)"), owned=("Ready",))
    apply_conditions(objects, namespace, "p", LOOP_MANAGER,  # from a copy without the Ready condition
                     set_condition([], "SignalsAvailable", False, "SignalsUnavailable", "down"),
                     owned=("SignalsAvailable", "AdmissionGuard"))
    apply_conditions(objects, namespace, "p", OBSERVER_MANAGER,  # from a copy without SignalsAvailable
                     set_condition([], "Ready", False, "InvalidSpec", "bad"), owned=("Ready",))
    conditions = policy_status(api_client, namespace, "p")["conditions"]
    assert {c["type"]: (c["status"], c["reason"]) for c in conditions} == {
        "Ready": ("False", "InvalidSpec"), "SignalsAvailable": ("False", "SignalsUnavailable")}
