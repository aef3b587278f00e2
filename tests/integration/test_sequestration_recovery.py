"""Crash safety and automation guardrails, each with an operator started for the test.

A crash can stop the operator at any line. What it leaves behind is one of a few states on the API
server; each test below builds one of them exactly as the operator writes it, starts a fresh operator,
and checks that it converges with no action lost or doubled. One test kills a real operator process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
from kubernetes import client

from sequestra.actuators import plans
from sequestra.actuators.kubernetes import RESOURCES, KubernetesActuator
from sequestra.controller.finalizers import RESTORE_FINALIZER
from sequestra.model.policy import POLICY_PLURAL
from sequestra.model.sequestration import GROUP, VERSION, SequestrationSpec
from sequestra.sandbox import crds, endpoints
from sequestra.sandbox.paths import SandboxPaths
from tests.integration import workloads
from tests.integration.operator_support import (
    Sequestrations,
    events_for,
    policy_status,
    running_operator,
    sequestration,
)
from tests.support import eventually

SCALE_TO_ZERO = {"type": "scale", "replicas": 0}


def _prior(index: int, action: str, path: str, before: Any, after: Any) -> dict[str, Any]:
    return {"actionIndex": index, "action": action, "targetKind": "Deployment", "targetName": "web",
            "changes": [{"path": path, "before": before, "existed": True, "after": after}], "created": []}



def _replicas(api_client: client.ApiClient, namespace: str) -> int:
    return int(workloads.read(api_client, namespace, "Deployment", "web")["spec"]["replicas"])


def _hold_with_a_record(api_client: client.ApiClient, namespace: str, **status: Any) -> Sequestrations:
    """Deployment web (5 replicas) and hold "hold" scaling it to 0, its prior state recorded as the operator
    writes it before touching the target (and what else `status` says), with no operator running."""
    workloads.create(api_client, namespace, workloads.deployment("web", 5))
    seqs = Sequestrations(api_client, namespace)
    seqs.create(sequestration("hold", "Deployment", "web", SCALE_TO_ZERO))
    seqs.patch_status("hold", {"phase": "Pending", "priorState": [_prior(0, "scale", "/spec/replicas", 5, 0)],
                               **status})
    return seqs


def test_crash_after_recording_prior_state_before_mutating_converges(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    seqs = _hold_with_a_record(api_client, namespace, targetRef="Deployment/web")

    with running_operator(sandbox):
        active = seqs.wait_phase("hold", "Active")
        assert _replicas(api_client, namespace) == 0
        scale = active["status"]["priorState"][0]["changes"][0]
        assert (scale["before"], scale["after"]) == (5, 0), "the record made before the crash is kept"
        # The crash came before the finalizer was added too (the two are written together): it is added on
        # the way back, so a deletion still restores first.
        assert RESTORE_FINALIZER in active["metadata"]["finalizers"]
        seqs.patch_spec("hold", {"release": True})
        seqs.wait_phase("hold", "Released")
    assert _replicas(api_client, namespace) == 5


def test_deleting_a_hold_that_crashed_before_turning_active_restores_the_target_first(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    # The operator recorded, added its finalizer, scaled the target and died before writing Active; then
    # someone deleted the hold. The finalizer keeps it until an operator restores the target.
    seqs = _hold_with_a_record(api_client, namespace)
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "sequestrations", "hold", {"metadata": {"finalizers": [RESTORE_FINALIZER]}},
        _content_type="application/merge-patch+json")
    client.AppsV1Api(api_client).patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 0}})
    seqs.delete("hold")

    with running_operator(sandbox):
        eventually(lambda: seqs.gone("hold"), what="the hold deleted once its target was restored")
    assert _replicas(api_client, namespace) == 5


def test_crash_after_mutating_before_the_status_update_does_not_act_twice(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    seqs = _hold_with_a_record(api_client, namespace)
    client.AppsV1Api(api_client).patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 0}})

    with running_operator(sandbox):
        active = seqs.wait_phase("hold", "Active")
        changes = active["status"]["priorState"][0]["changes"]
        assert changes == [{"path": "/spec/replicas", "before": 5, "existed": True, "after": 0}], \
            "not planned again from the already-changed object (which would record 0 -> 0)"
        assert "Drifted" not in {c["type"] for c in active["status"]["conditions"]}
        seqs.patch_spec("hold", {"release": True})
        seqs.wait_phase("hold", "Released")
    assert _replicas(api_client, namespace) == 5


def _hold_after_its_one_patch(api_client: client.ApiClient, namespace: str) -> tuple[Sequestrations, str]:
    """Deployment web (5 replicas) and hold "hold" scaling it to 0, as the operator leaves them when it stops
    right after the patch that takes a first plan and its record to the target: the finalizer on, the hold's
    status empty. Returns the hold's uid."""
    workloads.create(api_client, namespace, workloads.deployment("web", 5))
    seqs = Sequestrations(api_client, namespace)
    seqs.create(sequestration("hold", "Deployment", "web", SCALE_TO_ZERO))
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "sequestrations", "hold", {"metadata": {"finalizers": [RESTORE_FINALIZER]}},
        _content_type="application/merge-patch+json")
    hold = seqs.get("hold")
    spec = SequestrationSpec.model_validate(hold["spec"])
    actuator = KubernetesActuator(api_client)
    workload = actuator.resolve(namespace, spec.target)
    planned = actuator.plan_remaining(spec.effective_actions(), workload, "hold", [])
    assert actuator.apply_recorded(planned, namespace, hold["metadata"]["uid"], workload.body)
    assert _replicas(api_client, namespace) == 0
    return seqs, hold["metadata"]["uid"]


def test_crash_after_the_patch_that_carries_the_record_completes_the_hold_from_that_record(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    seqs, uid = _hold_after_its_one_patch(api_client, namespace)

    with running_operator(sandbox):
        active = seqs.wait_phase("hold", "Active")
        changes = active["status"]["priorState"][0]["changes"]
        assert changes == [{"path": "/spec/replicas", "before": 5, "existed": True, "after": 0}], \
            "the record from the target, not a plan made again from the changed target (5 -> 0, not 0 -> 0)"
        assert [p["action"] for p in active["status"]["priorState"]] == ["scale", "label"]
        assert "Drifted" not in {c["type"] for c in active["status"]["conditions"]}
        seqs.patch_spec("hold", {"release": True})
        seqs.wait_phase("hold", "Released")
    deployment = workloads.read(api_client, namespace, "Deployment", "web")
    assert deployment["spec"]["replicas"] == 5
    assert plans.record_annotation(uid) not in deployment["metadata"].get("annotations", {}), "the record goes too"
    assert "sequestra.dev/sequestered" not in deployment["metadata"].get("labels", {})


def test_deleting_a_hold_whose_record_is_only_on_the_target_restores_from_it(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    seqs, uid = _hold_after_its_one_patch(api_client, namespace)
    seqs.delete("hold")

    with running_operator(sandbox):
        eventually(lambda: seqs.gone("hold"), what="the hold deleted once its target was restored")
    deployment = workloads.read(api_client, namespace, "Deployment", "web")
    assert deployment["spec"]["replicas"] == 5
    assert plans.record_annotation(uid) not in deployment["metadata"].get("annotations", {})


def test_crash_midway_through_a_release_finishes_it(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    workloads.create(api_client, namespace, workloads.deployment("web", 5, limits={"cpu": "2"}))
    seqs = Sequestrations(api_client, namespace)
    seqs.create(sequestration("hold", "Deployment", "web", SCALE_TO_ZERO,
                              {"type": "throttle", "cpu": "100m"}, release=True))
    cpu_path = "/spec/template/spec/containers/0/resources/limits/cpu"
    # The throttle was already undone (restored in reverse order) when the operator died; scale was not.
    client.AppsV1Api(api_client).patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 0}})
    seqs.patch_status("hold", {"phase": "Releasing", "priorState": [
        _prior(0, "scale", "/spec/replicas", 5, 0), _prior(1, "throttle", cpu_path, "2", "100m")]})

    with running_operator(sandbox):
        released = seqs.wait_phase("hold", "Released")
    assert _replicas(api_client, namespace) == 5
    limits = workloads.read(api_client, namespace, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]
    assert limits["resources"]["limits"]["cpu"] == "2"
    assert "RestoreConflict" not in {c["type"] for c in released["status"]["conditions"]}


def test_a_failure_release_resumed_after_a_crash_still_ends_failed_and_pages(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    """The operator died while releasing a hold whose action the API server refused (as `_release` leaves
    it: Releasing, how it ends recorded). Resumed, it restores and ends Failed, with the page a failed
    containment sends, not Released as if nothing had gone wrong."""
    workloads.create(api_client, namespace, workloads.deployment("web", 5))
    seqs = Sequestrations(api_client, namespace)
    seqs.create(sequestration("hold", "Deployment", "web", SCALE_TO_ZERO))
    client.AppsV1Api(api_client).patch_namespaced_deployment("web", namespace, {"spec": {"replicas": 0}})
    seqs.patch_status("hold", {"phase": "Releasing", "priorState": [_prior(0, "scale", "/spec/replicas", 5, 0)],
                               "releaseOutcome": {"phase": "Failed", "reason": "ActionRejected",
                                                  "message": "the API server refused the change"}})
    alertmanager = endpoints.alertmanager_url()

    def pages() -> list[dict[str, Any]]:
        found = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5, params={
            "filter": ['alertname="SequestraNeedsHuman"', f'namespace="{namespace}"']}).json()
        return [a for a in found if a["annotations"].get("reason") == "ActionFailed"]

    with running_operator(sandbox, namespaces=(namespace,), SEQUESTRA_PAGER_ALERTMANAGER_URL=alertmanager):
        failed = seqs.wait_phase("hold", "Failed")
        eventually(pages, timeout_s=30, what="the failed containment paged")
    assert _replicas(api_client, namespace) == 5
    assert failed["status"]["transitions"][-1]["reason"] == "ActionRejected"


def test_operator_killed_repeatedly_while_applying_converges_without_lost_or_doubled_actions(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    count = 6
    for i in range(count):
        workloads.create(api_client, namespace, workloads.deployment(f"web-{i}", 3 + i))
    seqs = Sequestrations(api_client, namespace)
    env = {**os.environ, "SEQUESTRA_METRICS_PORT": "0", "KUBECONFIG": str(sandbox.kubeconfig)}
    command = [sys.executable, "-m", "sequestra.cli", "run", "--standalone", "--namespace", namespace]
    for i in range(count):
        seqs.create(sequestration(f"hold-{i}", "Deployment", f"web-{i}", SCALE_TO_ZERO))
    for delay_s in (1.5, 2.0, 2.5):  # SIGKILL at different points of the work, no clean shutdown
        operator = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay_s)
        operator.send_signal(signal.SIGKILL)
        operator.wait()
    operator = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for i in range(count):
            active = seqs.wait_phase(f"hold-{i}", "Active", timeout_s=60)
            scale = active["status"]["priorState"][0]["changes"][0]
            assert (scale["before"], scale["after"]) == (3 + i, 0), f"hold-{i} recorded the original count"
            assert [a["action"] for a in active["status"]["priorState"]] == ["scale", "label"], "nothing doubled"
        for i in range(count):
            seqs.patch_spec(f"hold-{i}", {"release": True})
        for i in range(count):
            seqs.wait_phase(f"hold-{i}", "Released", timeout_s=60)
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(timeout=30)
    for i in range(count):
        deployment = workloads.read(api_client, namespace, "Deployment", f"web-{i}")
        assert deployment["spec"]["replicas"] == 3 + i
        assert "sequestra.dev/sequestered" not in deployment["metadata"].get("labels", {})


def test_automated_holds_stop_at_the_namespace_cap_with_a_reason_and_an_event(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    for name in ("a", "b", "c", "d"):
        workloads.create(api_client, namespace, workloads.deployment(name, 2))
    seqs = Sequestrations(api_client, namespace)
    with running_operator(sandbox, SEQUESTRA_MAX_ACTIVE_PER_NAMESPACE="1"):
        seqs.create(sequestration("first", "Deployment", "a", SCALE_TO_ZERO, requester="sequestra"))
        seqs.wait_phase("first", "Active")
        seqs.create(sequestration("second", "Deployment", "b", SCALE_TO_ZERO, requester="sequestra"))
        refused = seqs.wait_phase("second", "Failed")
        seqs.create(sequestration("manual", "Deployment", "c", SCALE_TO_ZERO, requester="alice"))
        seqs.wait_phase("manual", "Active")
    assert "NamespaceCapReached" in {c["reason"] for c in refused["status"]["conditions"]}
    assert workloads.read(api_client, namespace, "Deployment", "b")["spec"]["replicas"] == 2
    assert ("Warning", "NamespaceCapReached") in {(t, r) for t, r, _ in events_for(api_client, namespace, "b")}


def test_a_burst_of_automated_holds_is_bound_by_the_namespace_cap_as_if_taken_one_by_one(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    """Five holds in one go (as one `kubectl apply` of five, or five incidents at one interval) under
    `maxActivePerNamespace: 1`: one is taken, four are refused, each saying how many are active."""
    names = [f"w{i}" for i in range(5)]
    for name in names:
        workloads.create(api_client, namespace, workloads.deployment(name, 2))
    seqs = Sequestrations(api_client, namespace)
    with running_operator(sandbox, namespaces=(namespace,), SEQUESTRA_MAX_ACTIVE_PER_NAMESPACE="1"):
        for name in names:
            seqs.create(sequestration(f"hold-{name}", "Deployment", name, SCALE_TO_ZERO, requester="sequestra"))
        def taken_or_refused(name: str) -> dict[str, Any] | None:
            status = seqs.get(f"hold-{name}").get("status") or {}
            return status if status.get("phase") in ("Active", "Failed") else None

        ended = {name: eventually(lambda n=name: taken_or_refused(n), what=f"hold-{name} taken or refused")  # type: ignore[misc]
                 for name in names}
    phases = sorted(status["phase"] for status in ended.values())
    assert phases == ["Active", "Failed", "Failed", "Failed", "Failed"], phases
    for status in ended.values():
        if status["phase"] == "Failed":
            assert "NamespaceCapReached" in {c["reason"] for c in status["conditions"]}
            assert "1 sequestrations active" in status["message"], status["message"]
    held = [name for name in names
            if workloads.read(api_client, namespace, "Deployment", name)["spec"]["replicas"] == 0]
    assert len(held) == 1, f"exactly one workload held: {held}"


def test_spark_applications_count_among_the_namespaces_workloads_for_the_share_cap(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    """Four SparkApplications, the default share cap of 50 %: a second hold is half the namespace (allowed), a
    third would be 75 % (refused, and said so)."""
    crds.install_spark_operator(api_client, sandbox)
    group, version, plural = RESOURCES["SparkApplication"]
    for i in range(4):
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(group, version, namespace, plural, {
            "apiVersion": f"{group}/{version}", "kind": "SparkApplication", "metadata": {"name": f"etl-{i}"},
            "spec": {"type": "Scala", "mode": "cluster", "sparkVersion": "3.5.5", "image": "apache/spark:3.5.5",
                     "mainClass": "org.example.Etl", "mainApplicationFile": "local:///opt/etl.jar",
                     "driver": {"cores": 1, "memory": "512m"},
                     "executor": {"cores": 1, "memory": "1g", "instances": 1}}})
    seqs = Sequestrations(api_client, namespace)
    with running_operator(sandbox, namespaces=(namespace,)):
        for i in range(3):
            seqs.create(sequestration(f"hold-{i}", "SparkApplication", f"etl-{i}", {"type": "suspend"},
                                      requester="sequestra"))
            if i < 2:
                seqs.wait_phase(f"hold-{i}", "Active")
        refused = seqs.wait_phase("hold-2", "Failed")
    assert "NamespaceShareExceeded" in {c["reason"] for c in refused["status"]["conditions"]}
    assert "75%" in refused["status"]["message"], refused["status"]["message"]


def test_a_policys_own_namespace_cap_binds_its_holds_under_a_looser_operator_setting(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    """docs/INSTALL.md shows users writing guardrails in the policy: `maxActivePerNamespace: 1` means one,
    although the operator-wide setting allows ten. The policy's status shows the limits in effect."""
    for name in ("a", "b", "c", "d"):
        workloads.create(api_client, namespace, workloads.deployment(name, 2))
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, POLICY_PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "SequestrationPolicy", "metadata": {"name": "tight"},
            # dry-run and a score no workload reaches: the policy's own loop never acts here.
            "spec": {"mode": "dry-run", "scoreThreshold": 1000, "interval": "2s",
                     "ladder": [{"name": "quarantine", "actions": [SCALE_TO_ZERO]}],
                     "guardrails": {"maxActivePerNamespace": 1, "maxActive": 80}}})
    seqs = Sequestrations(api_client, namespace)
    with running_operator(sandbox, namespaces=(namespace,), SEQUESTRA_MAX_ACTIVE_PER_NAMESPACE="10",
                          SEQUESTRA_MAX_ACTIVE="50"):
        seqs.create(sequestration("first", "Deployment", "a", SCALE_TO_ZERO, requester="sequestra",
                                  policyRef="tight"))
        seqs.wait_phase("first", "Active")
        seqs.create(sequestration("second", "Deployment", "b", SCALE_TO_ZERO, requester="sequestra",
                                  policyRef="tight"))
        refused = seqs.wait_phase("second", "Failed")
        effective = eventually(lambda: policy_status(api_client, namespace, "tight").get("effectiveGuardrails"),
                               what="the policy's effective guardrails in its status")
    assert "NamespaceCapReached" in {c["reason"] for c in refused["status"]["conditions"]}
    assert "(cap 1)" in refused["status"]["message"]
    assert workloads.read(api_client, namespace, "Deployment", "b")["spec"]["replicas"] == 2
    assert (effective["maxActivePerNamespace"], effective["maxActive"]) == (1, 50), "the stricter of each pair"


def test_the_api_server_refuses_invalid_sequestrations_with_clear_messages(
    crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    api = client.CustomObjectsApi(api_client)
    cases = {
        "unknown action": ({"type": "explode"}, 'Unsupported value: "explode"'),
        "negative replicas": ({"type": "scale", "replicas": -1}, "should be greater than or equal to 0"),
        "scale without replicas": ({"type": "scale"}, "a scale action needs replicas"),
    }
    for what, (action, message) in cases.items():
        body = sequestration("bad", "Deployment", "web", action)
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, "sequestrations", body)
        except client.ApiException as exc:
            assert exc.status == 422, what
            assert message in json.loads(exc.body)["message"], f"{what}: {exc.body}"
        else:
            raise AssertionError(f"{what} was accepted")
    missing_target = sequestration("bad", "Deployment", "web", SCALE_TO_ZERO)
    del missing_target["spec"]["target"]
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, "sequestrations", missing_target)
    except client.ApiException as exc:
        assert exc.status == 422 and "spec.target: Required value" in json.loads(exc.body)["message"]
    else:
        raise AssertionError("a Sequestration without a target was accepted")


def test_release_cannot_be_taken_back(
    crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    seqs = Sequestrations(api_client, namespace)
    seqs.create(sequestration("once", "Deployment", "web", SCALE_TO_ZERO, release=True))
    try:
        seqs.patch_spec("once", {"release": False})
    except client.ApiException as exc:
        assert exc.status == 422 and "release cannot be undone" in json.loads(exc.body)["message"]
    else:
        raise AssertionError("release was taken back")
    eventually(lambda: seqs.get("once")["spec"]["release"] is True, what="release still set")


def test_the_operator_exports_its_metrics_and_prometheus_scrapes_them(
    sandbox: SandboxPaths, crds_installed: list[str], api_client: client.ApiClient, namespace: str,
) -> None:
    from sequestra.sandbox import endpoints

    workloads.create(api_client, namespace, workloads.deployment("web", 2))
    port = endpoints.PORTS.operator_metrics
    env = {**os.environ, "SEQUESTRA_METRICS_PORT": str(port), "KUBECONFIG": str(sandbox.kubeconfig)}
    operator = subprocess.Popen([sys.executable, "-m", "sequestra.cli", "run", "--standalone", "--namespace",
                                 namespace], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seqs = Sequestrations(api_client, namespace)
        seqs.create(sequestration("hold", "Deployment", "web", SCALE_TO_ZERO))
        seqs.wait_phase("hold", "Active")

        def exported() -> str | None:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            return text if "sequestra_sequestrations_active 1.0" in text else None

        text = eventually(exported, what="the operator's /metrics")
        assert 'sequestra_transitions_total{phase="Active",reason="Applied"} 1.0' in text
        assert "sequestra_actuator_duration_seconds_count" in text

        def scraped() -> list[dict[str, Any]]:
            response = httpx.get(f"{endpoints.prometheus_url()}/api/v1/query",
                                 params={"query": 'sequestra_sequestrations_active{job="sequestra"} == 1'}, timeout=5)
            return list(response.json()["data"]["result"])

        eventually(scraped, timeout_s=30, what="Prometheus scraping the operator")
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(timeout=30)
