"""Spark actions through the real operator: a runaway SparkApplication capped by gating its new executor pods
(its spec untouched), a schedule suspended, and both restored exactly. Stand-in: the sandbox's Spark stand-in
plays Spark's allocator on real KWOK pods here (it keeps the executors the spec and demand ask for, pods
waiting behind a gate counted as asked for, as Spark counts them); the same cap on real Spark under the real
spark-operator is tests/integration/test_real_spark.py."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from sequestra.actuators import spark_gate
from sequestra.actuators.kubernetes import GATE_RESOURCES, RESOURCES
from sequestra.sandbox import crds, endpoints
from sequestra.sandbox.paths import SandboxPaths
from sequestra.sandbox.spark_standin import APP_NAME_LABEL, DEMAND_ANNOTATION, ROLE_LABEL, TARGET_EXECUTORS_GAUGE
from tests.integration.operator_support import Sequestrations, running_operator, sequestration
from tests.support import eventually

VOLATILE_METADATA = {"resourceVersion", "generation", "managedFields", "uid", "creationTimestamp"}


@pytest.fixture(scope="module")
def spark_crds(api_client: client.ApiClient, sandbox: SandboxPaths) -> list[str]:
    return crds.install_spark_operator(api_client, sandbox)


@pytest.fixture(scope="module")
def operator(sandbox: SandboxPaths, crds_installed: list[str], spark_crds: list[str]) -> Iterator[KopfRunner]:
    with running_operator(sandbox) as runner:
        yield runner


@pytest.fixture()
def seqs(api_client: client.ApiClient, namespace: str) -> Sequestrations:
    return Sequestrations(api_client, namespace)


def spark_application(name: str, *, demand: int, executor: dict[str, Any],
                      allocation: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "Scala", "mode": "cluster", "sparkVersion": "3.5.5", "image": "apache/spark:3.5.5",
        "mainClass": "org.example.Etl", "mainApplicationFile": "local:///opt/etl.jar",
        "sparkConf": {"spark.sql.shuffle.partitions": "400"},
        "driver": {"cores": 1, "memory": "512m", "labels": {"team": "data"}},
        "executor": {"cores": 1, "memory": "1g", **executor},
    }
    if allocation is not None:
        spec["dynamicAllocation"] = allocation
    return {"apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
            "metadata": {"name": name, "labels": {"app": name}, "annotations": {DEMAND_ANNOTATION: str(demand)}},
            "spec": spec}


def _objects(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def create(api_client: client.ApiClient, namespace: str, manifest: dict[str, Any]) -> None:
    group, version, plural = RESOURCES[manifest["kind"]]
    _objects(api_client).create_namespaced_custom_object(group, version, namespace, plural, manifest)


def read(api_client: client.ApiClient, namespace: str, kind: str, name: str) -> dict[str, Any]:
    group, version, plural = RESOURCES[kind]
    body: Any = _objects(api_client).get_namespaced_custom_object(group, version, namespace, plural, name)
    return dict(body)


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(obj)
    result.pop("status", None)
    for key in VOLATILE_METADATA:
        result["metadata"].pop(key, None)
    return result


def running_executors(api_client: client.ApiClient, namespace: str, app: str) -> list[str]:
    pods = client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector=f"{APP_NAME_LABEL}={app},{ROLE_LABEL}=executor")
    return sorted(p.metadata.name for p in pods.items
                  if p.status.phase == "Running" and p.metadata.deletion_timestamp is None)


def prometheus_value(metric: str, namespace: str, app: str) -> float | None:
    query = f'{metric}{{namespace="{namespace}",app="{app}"}}'
    response = httpx.get(f"{endpoints.prometheus_url()}/api/v1/query", params={"query": query}, timeout=5)
    result = response.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_executors(api_client: client.ApiClient, namespace: str, app: str, count: int) -> None:
    """Until exactly `count` executor pods run and Prometheus has scraped that figure."""
    eventually(lambda: len(running_executors(api_client, namespace, app)) == count, timeout_s=60,
               what=f"{count} running executors of {app} (now {len(running_executors(api_client, namespace, app))})")
    eventually(lambda: prometheus_value("spark_executors", namespace, app) == count, timeout_s=30,
               what=f"Prometheus to report spark_executors={count} for {app}")


def gated_executors(api_client: client.ApiClient, namespace: str, app: str) -> list[str]:
    pods = client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector=f"{APP_NAME_LABEL}={app},{ROLE_LABEL}=executor")
    return sorted(p.metadata.name for p in pods.items if p.metadata.deletion_timestamp is None
                  and any(g.name == spark_gate.EXECUTOR_GATE for g in p.spec.scheduling_gates or []))


def gate_objects(api_client: client.ApiClient, namespace: str, hold: str) -> dict[str, Any]:
    """The hold's admission policy and binding as the API server has them (None when absent)."""
    name = spark_gate.gate_policy_name(hold, namespace)
    found: dict[str, Any] = {}
    for kind, plural in GATE_RESOURCES.items():
        try:
            found[kind] = _objects(api_client).get_cluster_custom_object(
                "admissionregistration.k8s.io", "v1", plural, name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            found[kind] = None
    return found


@pytest.mark.parametrize(("executor", "allocation"), [
    ({"instances": 10}, {"enabled": True, "minExecutors": 2, "maxExecutors": 50}),
    ({}, {"enabled": True, "initialExecutors": 6}),
], ids=["max-and-instances-present", "max-absent"])
def test_runaway_spark_application_is_capped_without_a_spec_change_and_released_exactly(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
    executor: dict[str, Any], allocation: dict[str, Any],
) -> None:
    create(api_client, namespace, spark_application("etl", demand=40, executor=executor, allocation=allocation))
    before = read(api_client, namespace, "SparkApplication", "etl")
    wait_executors(api_client, namespace, "etl", 40)
    assert prometheus_value("spark_shuffle_spill_bytes_total", namespace, "etl"), "executors spill while they run"

    seqs.create(sequestration("cap", "SparkApplication", "etl", {"type": "scale", "replicas": 4}))
    active = seqs.wait_phase("cap", "Active")

    assert active["status"]["priorState"][0]["changes"] == [], "a spec change would resubmit the application"
    assert read(api_client, namespace, "SparkApplication", "etl")["spec"] == before["spec"]
    assert all(gate_objects(api_client, namespace, "cap").values()), "the gate and its binding exist"
    wait_executors(api_client, namespace, "etl", 4)
    # As Spark does, the stand-in asks for replacements of the executors stopped: they wait behind the gate.
    eventually(lambda: len(gated_executors(api_client, namespace, "etl")) == 36, timeout_s=60,
               what=f"36 executors waiting (now {len(gated_executors(api_client, namespace, 'etl'))})")
    tampered = [c for c in seqs.get("cap")["status"].get("conditions", []) if c["type"] == "Tampered"]
    assert not any(c["status"] == "True" for c in tampered), f"nobody touched the gate: {tampered}"
    demand = f'{{__name__=~"metrics_.+_driver_{TARGET_EXECUTORS_GAUGE}",namespace="{namespace}",pod="etl-driver"}}'
    response = httpx.get(f"{endpoints.prometheus_url()}/api/v1/query", params={"query": demand}, timeout=5)
    assert [float(r["value"][1]) for r in response.json()["data"]["result"]] == [40.0], "the demand is still there"

    # An executor lost while held: one waiting is let through, so the application keeps its 4.
    core = client.CoreV1Api(api_client)
    lost = running_executors(api_client, namespace, "etl")[0]
    lost_uid = core.read_namespaced_pod(lost, namespace).metadata.uid
    core.delete_namespaced_pod(lost, namespace, grace_period_seconds=0)

    def replaced() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector=f"{APP_NAME_LABEL}=etl,{ROLE_LABEL}=executor")
        running = [p for p in pods.items if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
        return len(running) == 4 and lost_uid not in {p.metadata.uid for p in running}
    eventually(replaced, timeout_s=30, what="a waiting executor let through in place of the lost one")

    seqs.patch_spec("cap", {"release": True})
    seqs.wait_phase("cap", "Released")
    after = read(api_client, namespace, "SparkApplication", "etl")
    assert comparable(after) == comparable(before)
    assert not any(gate_objects(api_client, namespace, "cap").values()), "the gate is gone with the hold"
    eventually(lambda: not gated_executors(api_client, namespace, "etl"), timeout_s=15,
               what="no executor left behind the gate")
    wait_executors(api_client, namespace, "etl", 40)


def test_an_executor_pod_resolves_to_its_spark_application(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    create(api_client, namespace, spark_application("etl", demand=3, executor={"instances": 3}, allocation=None))
    wait_executors(api_client, namespace, "etl", 3)

    seqs.create(sequestration("cap", "Pod", "etl-exec-2", {"type": "scale", "replicas": 1}))
    active = seqs.wait_phase("cap", "Active")

    assert active["status"]["targetRef"] == "SparkApplication/etl"
    assert read(api_client, namespace, "SparkApplication", "etl")["spec"]["executor"]["instances"] == 3
    wait_executors(api_client, namespace, "etl", 1)


def test_scheduled_spark_application_is_suspended_and_restored_exactly(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    template = spark_application("nightly", demand=2, executor={"instances": 2}, allocation=None)["spec"]
    create(api_client, namespace, {
        "apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "ScheduledSparkApplication",
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "@every 1h", "concurrencyPolicy": "Forbid", "template": template},
    })
    before = read(api_client, namespace, "ScheduledSparkApplication", "nightly")
    assert "suspend" not in before["spec"]

    seqs.create(sequestration("pause", "ScheduledSparkApplication", "nightly", {"type": "suspend"}))
    seqs.wait_phase("pause", "Active")
    held = read(api_client, namespace, "ScheduledSparkApplication", "nightly")
    assert held["spec"]["suspend"] is True
    assert held["metadata"]["labels"]["sequestra.dev/sequestered"] == "true"

    seqs.patch_spec("pause", {"release": True})
    seqs.wait_phase("pause", "Released")
    assert comparable(read(api_client, namespace, "ScheduledSparkApplication", "nightly")) == comparable(before)


def test_a_deleted_gate_is_put_back_as_tampering_and_the_owner_s_own_change_outlives_the_hold(
    operator: KopfRunner, api_client: client.ApiClient, namespace: str, seqs: Sequestrations,
) -> None:
    create(api_client, namespace, spark_application("etl", demand=40, executor={"instances": 10}, allocation=None))
    wait_executors(api_client, namespace, "etl", 10)
    seqs.create(sequestration("cap", "SparkApplication", "etl", {"type": "scale", "replicas": 4}))
    seqs.wait_phase("cap", "Active")
    wait_executors(api_client, namespace, "etl", 4)

    # The owner's way around a cap: more executors asked for, and the gate deleted.
    group, version, plural = RESOURCES["SparkApplication"]
    _objects(api_client).patch_namespaced_custom_object(
        group, version, namespace, plural, "etl", {"spec": {"dynamicAllocation": {"enabled": True, "minExecutors": 2}}},
        _content_type="application/merge-patch+json")
    _objects(api_client).delete_cluster_custom_object(
        "admissionregistration.k8s.io", "v1", GATE_RESOURCES[spark_gate.POLICY_KIND],
        spark_gate.gate_policy_name("cap", namespace))
    eventually(lambda: all(gate_objects(api_client, namespace, "cap").values()), timeout_s=30,
               what="the hold to put its gate back")
    # The gate is back as soon as the interval puts it back; the condition is written after the interval.
    eventually(lambda: any(c["type"] == "Tampered" and c["status"] == "True"
                           for c in seqs.get("cap")["status"].get("conditions", [])),
               timeout_s=15, what="the hold to say its gate was tampered with")
    wait_executors(api_client, namespace, "etl", 4)

    seqs.patch_spec("cap", {"release": True})
    seqs.wait_phase("cap", "Released")
    after = read(api_client, namespace, "SparkApplication", "etl")["spec"]
    assert after["dynamicAllocation"] == {"enabled": True, "minExecutors": 2}, "the owner's change stays"
    assert after["executor"]["instances"] == 10
