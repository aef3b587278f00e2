"""The incident Sequestra exists for, end to end on the sandbox: a flag flip makes a real producer flood a
real topic; the operator attributes it to the Deployment, contains it with a Kafka quota (measured at the
broker), survives a restart mid-incident without a second hold, and releases it exactly. A flag flip that
does not change traffic triggers nothing."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from kubernetes import client

from sequestra.actuators.kafka_quotas import ClientQuotas
from sequestra.demo import (
    broker_produce_rate,
    deployment_manifest,
    producer_annotations,
    sandbox_operator_environment,
)
from sequestra.model.kafka import QuotaEntity
from sequestra.model.policy import POLICY_PLURAL
from sequestra.model.sequestration import GROUP, VERSION
from sequestra.sandbox import endpoints
from sequestra.sandbox.paths import SandboxPaths
from tests.integration.operator_support import (
    Sequestrations,
    automated_holds,
    running_operator,
    wait_automated_hold,
    wait_scored,
)
from tests.support import eventually

QUOTA = 50_000
NORMAL = 40_000
FLOOD = 2_000_000
INTERVAL_S = 5


def operator_env() -> dict[str, str]:
    return {**sandbox_operator_environment(), "SEQUESTRA_WARMUP_POINTS": "12", "SEQUESTRA_WARMUP_HISTORY_S": "600"}


def policy() -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SequestrationPolicy", "metadata": {"name": "kafka"},
            "spec": {"mode": "enforce", "interval": f"{INTERVAL_S}s", "ttl": "10m", "scoreThreshold": 0.6,
                     "verify": {"intervals": 12}, "signals": [{"name": "kafka_producer_byte_rate"}],
                     "ladder": [{"name": "observe"},
                                {"name": "throttle", "actions": [{"type": "quota", "producerByteRate": QUOTA}]},
                                {"name": "quarantine", "actions": [{"type": "scale", "replicas": 0}]}]}}


def set_rate(namespace: str, prefix: str, rate: float) -> None:
    httpx.post(f"{endpoints.workload_metrics_url()}/v1/kafka-rate",
               json={"namespace": namespace, "pod_prefix": prefix, "bytes_per_second": rate},
               timeout=5).raise_for_status()


@pytest.fixture()
def batch_quota() -> Any:
    quotas = ClientQuotas(endpoints.kafka_client_config(endpoints.KAFKA_OPERATOR_USER))
    quotas.alter(QuotaEntity(user="batch"), remove=["producer_byte_rate"])
    yield quotas
    quotas.alter(QuotaEntity(user="batch"), remove=["producer_byte_rate"])
    quotas.close()


def test_a_flag_flip_flood_is_contained_by_quota_and_released_exactly(
        sandbox: SandboxPaths, api_client: client.ApiClient, crds_installed: list[str], namespace: str,
        batch_quota: ClientQuotas) -> None:
    core, objects = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="checkout-flags"), data={"BULK_EXPORT": "off", "THEME": "light"}))
    objects.create_namespaced_custom_object("apps", "v1", namespace, "deployments", deployment_manifest(
        "checkout", producer_annotations("checkout", "batch", f"orders-{namespace}", NORMAL),
        {"sequestra.dev/kafka-principal": "batch", "sequestra.dev/kafka-client-id": "checkout-*"},
        env_from="checkout-flags"))
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, POLICY_PLURAL, policy())
    eventually(lambda: (broker_produce_rate("batch") or 0) > NORMAL / 2, timeout_s=90, what="checkout producing")
    time.sleep(30)  # a baseline worth the name in Prometheus' history
    before = batch_quota.describe(QuotaEntity(user="batch"))
    with running_operator(sandbox, **operator_env()):
        wait_scored(api_client, namespace, "kafka", 1)
        # A benign flag flip: the ConfigMap changes, traffic does not. Nothing may happen.
        core.patch_namespaced_config_map("checkout-flags", namespace, {"data": {"THEME": "dark"}})
        time.sleep(INTERVAL_S * 6)
        assert automated_holds(api_client, namespace) == [], "a flag flip that changes nothing must trigger nothing"
        # The real incident: the flag that matters flips and the producer floods.
        core.patch_namespaced_config_map("checkout-flags", namespace, {"data": {"BULK_EXPORT": "on"}})
        set_rate(namespace, "checkout-", FLOOD)
        flooded = time.monotonic()
        held = wait_automated_hold(api_client, namespace, "kafka", timeout_s=INTERVAL_S * 12)
        detected_s = time.monotonic() - flooded
        assert held[0]["spec"]["target"] == {"kind": "Deployment", "name": "checkout"}
        assert held[0]["spec"]["actions"][0] == {"type": "quota", "producerByteRate": QUOTA}
        assert "kafka_producer_byte_rate" in held[0]["spec"]["reason"]
        name = held[0]["metadata"]["name"]
        Sequestrations(api_client, namespace).wait_phase(name, "Active", timeout_s=60)
        assert batch_quota.describe(QuotaEntity(user="batch")) == {"producer_byte_rate": QUOTA}
        eventually(lambda: (broker_produce_rate("batch") or FLOOD) <= QUOTA * 1.5, timeout_s=90,
                   what="the broker holding checkout to the quota")
        diagnosis = held[0]["spec"]["diagnosis"]
        print(f"detected {detected_s:.0f} s after the flood; diagnosis: {diagnosis.get('summary')}")
    # The operator restarts mid-incident: it resumes the hold and does not open a second one.
    with running_operator(sandbox, **operator_env()):
        time.sleep(INTERVAL_S * 6)
        assert [h["metadata"]["name"] for h in automated_holds(api_client, namespace)] == [name]
        assert Sequestrations(api_client, namespace).get(name)["status"]["phase"] == "Active"
        assert batch_quota.describe(QuotaEntity(user="batch")) == {"producer_byte_rate": QUOTA}
        set_rate(namespace, "checkout-", NORMAL)  # the owner fixed the flag; then releases by hand
        core.patch_namespaced_config_map("checkout-flags", namespace, {"data": {"BULK_EXPORT": "off"}})
        Sequestrations(api_client, namespace).patch_spec(name, {"release": True})
        Sequestrations(api_client, namespace).wait_phase(name, "Released", timeout_s=60)
    assert batch_quota.describe(QuotaEntity(user="batch")) == before, "the quota must be exactly as before the hold"
