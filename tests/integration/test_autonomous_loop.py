"""The autonomous loop against the sandbox: real Prometheus scraping the kubelet stand-in, the real API
server, the operator process. A CPU hog is contained with a CPU throttle (not a kill), its neighbour
is left alone, and Prometheus going away yields "unknown", never an action."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from kubernetes import client

from sequestra.model.policy import POLICY_PLURAL
from sequestra.model.sequestration import GROUP, VERSION
from sequestra.sandbox import crds, endpoints
from sequestra.sandbox.paths import SandboxPaths
from tests.integration.operator_support import (
    Sequestrations,
    automated_holds,
    policy_status,
    running_operator,
    wait_automated_hold,
    wait_scored,
)
from tests.integration.workloads import create, deployment
from tests.support import eventually

LOOP_ENV = {
    "SEQUESTRA_PROMETHEUS_URL": endpoints.prometheus_url(),
    "SEQUESTRA_WARMUP_POINTS": "8",  # 40 s of history at the policy's 5 s interval
    "SEQUESTRA_PERSISTENCE_INTERVALS": "2",
    "SEQUESTRA_WARMUP_HISTORY_S": "600",
}


def policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SequestrationPolicy", "metadata": {"name": name},
            "spec": {"mode": "enforce", "interval": "5s", "ttl": "10m", "verify": {"intervals": 12},
                     "signals": [{"name": "cpu_usage_cores"}], "scoreThreshold": 0.6,
                     "ladder": [{"name": "observe"},
                                {"name": "throttle", "actions": [{"type": "throttle", "cpu": "300m"}]},
                                {"name": "quarantine", "actions": [{"type": "scale", "replicas": 0}]}],
                     **spec}}


def hog(namespace: str, pod_prefix: str, cores: float) -> None:
    httpx.post(f"{endpoints.workload_metrics_url()}/v1/overrides",
               json={"namespace": namespace, "pod_prefix": pod_prefix, "cpu_cores": cores},
               timeout=5).raise_for_status()


@pytest.fixture()
def clear_overrides() -> Any:
    yield
    httpx.delete(f"{endpoints.workload_metrics_url()}/v1/overrides", timeout=5)


def test_a_cpu_hog_is_throttled_and_its_neighbour_left_alone(
        sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str], namespace: str,
        clear_overrides: None) -> None:
    apps = client.AppsV1Api(api_client)
    create(api_client, namespace, deployment("hog", 2))
    create(api_client, namespace, deployment("steady", 2))
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, POLICY_PLURAL, policy("cpu"))
    with running_operator(sandbox, **LOOP_ENV):
        wait_scored(api_client, namespace, "cpu", 2)
        time.sleep(15)  # three intervals of everything steady
        assert automated_holds(api_client, namespace) == [], "nothing may happen while everything is steady"
        started = time.monotonic()
        hog(namespace, "hog-", 2.0)
        held = wait_automated_hold(api_client, namespace, "cpu")
        detected_s = time.monotonic() - started
        assert len(held) == 1 and held[0]["spec"]["target"] == {"kind": "Deployment", "name": "hog"}
        seq = held[0]
        assert [a["type"] for a in seq["spec"]["actions"]] == ["throttle", "label"]
        assert "cpu_usage_cores" in seq["spec"]["reason"]
        assert seq["spec"]["diagnosis"].get("summary"), seq["spec"]["diagnosis"]
        name = seq["metadata"]["name"]
        Sequestrations(api_client, namespace).wait_phase(name, "Active", timeout_s=60)
        limits = apps.read_namespaced_deployment("hog", namespace).spec.template.spec.containers[0].resources.limits
        assert limits == {"cpu": "300m"}
        # The throttle takes effect (the stand-in caps CPU at the limit, like CFS) and the loop sees it.
        eventually(lambda: (Sequestrations(api_client, namespace).get(name).get("status") or {})
                   .get("incident", {}).get("effective"), timeout_s=120, what="containment verified effective")
        assert all(s["spec"]["target"]["name"] == "hog" for s in automated_holds(api_client, namespace))
        status = policy_status(api_client, namespace, "cpu")
        assert "Contain" in status["lastDecision"]["summary"] and status["lastDecision"]["workload"].startswith(
            "Deployment/hog")
        guard = next(c for c in status["conditions"] if c["type"] == "AdmissionGuard")
        assert guard["status"] == "True", guard  # the sandbox installs the guard with the CRDs
        print(f"hog detected and held {detected_s:.0f} s after it started")


def test_a_declared_backfill_is_left_alone_while_the_same_load_undeclared_is_held(
        sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str], namespace: str,
        clear_overrides: None) -> None:
    backfill = deployment("backfill", 2)
    backfill["metadata"]["annotations"] = {"sequestra.dev/expected-load": "monthly re-index, 2026-12"}
    create(api_client, namespace, backfill)
    create(api_client, namespace, deployment("hog", 2))
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, POLICY_PLURAL, policy("cpu"))
    with running_operator(sandbox, **LOOP_ENV):
        wait_scored(api_client, namespace, "cpu", 2)
        time.sleep(15)  # three intervals of everything steady
        hog(namespace, "backfill-", 2.0)
        hog(namespace, "hog-", 2.0)
        held = wait_automated_hold(api_client, namespace, "cpu")
        assert [h["spec"]["target"]["name"] for h in held] == ["hog"]
        # The same load, declared: recognised by the shipped planned-backfill runbook before any containment.
        decision = eventually(lambda: (policy_status(api_client, namespace, "cpu").get("lastDecision") or {})
                              if "planned-backfill" in str(policy_status(api_client, namespace, "cpu")) else None,
                              timeout_s=60, what="the policy saying the backfill looks expected")
        assert decision["workload"].startswith("Deployment/backfill") and "not contained" in decision["summary"]
        # Which runbook excused it, and on what: the declaration on the workload's spec.
        assert decision["runbook"] == "benign-planned-backfill" and "spec" in decision["evidence"], decision
        time.sleep(10)
        assert [h["spec"]["target"]["name"] for h in automated_holds(api_client, namespace)] == ["hog"]


def test_many_workloads_going_bad_at_once_page_once_each_and_none_is_held(
        sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str], namespace: str,
        clear_overrides: None) -> None:
    """A shared dependency (here: four services' CPU tripling in the same minute) is a human's to look at;
    holding every service it touches would not fix it."""
    names = ("cart", "search", "profile", "catalog")
    for name in names:
        create(api_client, namespace, deployment(name, 1))
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, POLICY_PLURAL, policy("cpu"))
    alertmanager = endpoints.alertmanager_url()

    def pages() -> list[dict[str, Any]]:
        found = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5, params={
            "filter": ['alertname="SequestraNeedsHuman"', f'namespace="{namespace}"']}).json()
        return [a for a in found if a["annotations"].get("reason") == "SharedDependency"]

    with running_operator(sandbox, SEQUESTRA_PAGER_ALERTMANAGER_URL=alertmanager, **LOOP_ENV):
        wait_scored(api_client, namespace, "cpu", len(names))
        time.sleep(15)  # three intervals of everything steady
        for name in names:
            hog(namespace, f"{name}-", 2.0)
        paged = eventually(lambda: pages() if len(pages()) == len(names) else None, timeout_s=120,
                           what="one SharedDependency page per workload")
        assert {a["labels"]["workload"] for a in paged} == set(names)
        decision = policy_status(api_client, namespace, "cpu")["lastDecision"]
        assert "shared-dependency" in decision["summary"] and "not contained" in decision["summary"], decision
        assert decision["runbook"] == "shared-dependency" and "peers" in decision["evidence"], decision
        time.sleep(15)  # three more intervals, all four still anomalous
        assert automated_holds(api_client, namespace) == []
        assert len(pages()) == len(names)  # paged once each, not once per interval


def test_prometheus_unreachable_means_unknown_and_no_action(
        sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str], namespace: str,
        clear_overrides: None) -> None:
    create(api_client, namespace, deployment("hog", 1))
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, POLICY_PLURAL, policy("blind"))
    hog(namespace, "hog-", 3.0)
    with running_operator(sandbox, **{**LOOP_ENV, "SEQUESTRA_PROMETHEUS_URL": "http://127.0.0.1:1"}):
        condition = eventually(
            lambda: next((c for c in policy_status(api_client, namespace, "blind").get("conditions", [])
                          if c["type"] == "SignalsAvailable" and c["status"] == "False"), None),
            timeout_s=30, what="the policy saying its signals are unavailable")
        assert "no new action" in condition["message"]
        time.sleep(15)
        assert automated_holds(api_client, namespace) == []


def test_a_runaway_spark_application_gets_fewer_executors(
        sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str], namespace: str) -> None:
    from tests.integration.test_spark_actuators import create as create_spark
    from tests.integration.test_spark_actuators import spark_application, wait_executors

    crds.install_spark_operator(api_client, sandbox)
    create_spark(api_client, namespace, spark_application(
        "etl", demand=6, executor={"instances": 2}, allocation={"enabled": True, "maxExecutors": 50}))
    wait_executors(api_client, namespace, "etl", 6)
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, POLICY_PLURAL, policy(
            "spark", signals=[{"name": "spark_executors"}],
            ladder=[{"name": "observe"}, {"name": "throttle", "actions": [{"type": "scale", "replicas": 4}]},
                    {"name": "quarantine", "actions": [{"type": "suspend"}]}]))
    with running_operator(sandbox, **LOOP_ENV):
        wait_scored(api_client, namespace, "spark", 1)
        time.sleep(15)
        assert automated_holds(api_client, namespace) == []
        httpx.post(f"{endpoints.spark_standin_url()}/v1/demand",
                   json={"namespace": namespace, "app": "etl", "executors": 40}, timeout=5).raise_for_status()
        held = wait_automated_hold(api_client, namespace, "spark")
        assert held[0]["spec"]["target"] == {"kind": "SparkApplication", "name": "etl"}
        assert held[0]["spec"]["actions"][0] == {"type": "scale", "replicas": 4}
        Sequestrations(api_client, namespace).wait_phase(held[0]["metadata"]["name"], "Active", timeout_s=60)
        wait_executors(api_client, namespace, "etl", 4)


def test_a_containment_the_guardrails_refuse_pages_once_and_creates_no_hold_while_the_cap_stands(
        sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str], namespace: str,
        clear_overrides: None) -> None:
    """One hold per namespace at most: a second hog there is not held (and not re-tried as a new hold every
    interval, each refused and counted as a repeat offence); a human hears about it once."""
    for name in ("hog", "second", "steady"):
        create(api_client, namespace, deployment(name, 1))
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, POLICY_PLURAL, policy("cpu", guardrails={"maxActivePerNamespace": 1}))
    alertmanager = endpoints.alertmanager_url()

    def refusal_pages() -> list[dict[str, Any]]:
        found = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5, params={
            "filter": ['alertname="SequestraNeedsHuman"', f'namespace="{namespace}"']}).json()
        return [a for a in found if a["annotations"].get("reason") == "ContainmentRefused"]

    with running_operator(sandbox, SEQUESTRA_PAGER_ALERTMANAGER_URL=alertmanager, **LOOP_ENV):
        wait_scored(api_client, namespace, "cpu", 3)
        time.sleep(15)  # three intervals of everything steady
        hog(namespace, "hog-", 2.0)
        held = wait_automated_hold(api_client, namespace, "cpu")
        Sequestrations(api_client, namespace).wait_phase(held[0]["metadata"]["name"], "Active", timeout_s=60)
        hog(namespace, "second-", 2.0)
        paged = eventually(lambda: refusal_pages() or None, timeout_s=120, what="the refusal paged")
        assert [a["labels"]["workload"] for a in paged] == ["second"]
        decision = policy_status(api_client, namespace, "cpu")["lastDecision"]
        assert "NamespaceCapReached" in decision["summary"] and "not contained" in decision["summary"], decision
        time.sleep(20)  # four more intervals, the second hog still anomalous and the cap still reached
        targets = [h["spec"]["target"]["name"] for h in automated_holds(api_client, namespace)]
        assert targets == ["hog"], f"no hold made (and refused) for the second hog: {targets}"
        assert len(refusal_pages()) == 1


def test_a_counted_signal_with_no_series_is_said_on_the_policy_not_read_as_signals_read(
        sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str], namespace: str) -> None:
    """A policy counting a metric name the cluster's exporters do not use: Prometheus answers, with nothing."""
    create(api_client, namespace, deployment("web", 1))
    misnamed = 'sum by (namespace, pod) (rate(container_cpu_usage_secs_total{namespace=~"{namespaces}"}[30s]))'
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, POLICY_PLURAL,
        policy("misnamed", signals=[{"name": "cpu_usage_cores", "query": misnamed}]))
    with running_operator(sandbox, **LOOP_ENV):
        def said() -> dict[str, Any] | None:
            conditions = policy_status(api_client, namespace, "misnamed").get("conditions") or []
            found = next((c for c in conditions if c["type"] == "SignalsAvailable"), None)
            return found if found and found["reason"] == "SampledSomeSilent" else None

        condition = eventually(said, timeout_s=60, what="the silent signal named on the policy")
    assert condition["status"] == "True" and "cpu_usage_cores" in condition["message"], condition
    assert automated_holds(api_client, namespace) == []
